--[[
  Sets the idle time of task entries this consumer still owns, and leaves
  alone those another consumer has taken over since (never steals).
  heartbeat() sets idle 0, so stale recovery does not take an entry that is
  being worked on; release() sets a very large idle, so the next stale
  check anywhere takes the entry at once.

  KEYS[1] task stream (<p>:tasks)

  ARGV[1] consumer group name
  ARGV[2] consumer name
  ARGV[3] idle time to set, in milliseconds
  ARGV[4..] task entry ids

  Returns the number of entries that were still this consumer's.
]]
local tasks = KEYS[1]
local group = ARGV[1]
local consumer = ARGV[2]
local owned = 0

for i = 4, #ARGV do
  local entryId = ARGV[i]
  local pending = redis.pcall('XPENDING', tasks, group, entryId, entryId, 1, consumer)
  if type(pending) == 'table' and not pending.err and #pending > 0 then
    -- JUSTID: does not count as a new delivery.
    redis.call('XCLAIM', tasks, group, consumer, 0, entryId, 'IDLE', ARGV[3], 'JUSTID')
    owned = owned + 1
  end
end
return owned
