--[[
  Moves the retry copies whose delay is over from the delayed set to the end
  of the task stream, oldest due first, at most ARGV[1] of them. Every worker
  calls it before reading tasks, so a retry comes back within one poll of
  its due time whoever is alive (the delay lives in Redis, not in a worker's
  timer that would die with it).

  KEYS[1] delayed zset   (<p>:delayed)  cjson {failed entry id, {field, value, ...}} -> due time (ms, Redis clock)
  KEYS[2] task stream    (<p>:tasks)

  ARGV[1] most copies to move in this call

  Returns
    {moved, ms}  how many were moved, and how long until the next one is due
                 (-1 when nothing else waits)
]]
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', nowMs, 'LIMIT', 0, tonumber(ARGV[1]))
-- The task stream goes with the sweep ('ttg reset'): never recreate it from a leftover retry.
if #due > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  for _, member in ipairs(due) do
    local decoded = cjson.decode(member)
    redis.call('XADD', KEYS[2], '*', unpack(decoded[2]))
    redis.call('ZREM', KEYS[1], member)
  end
end
local nextDue = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #nextDue == 0 then
  return {#due, -1}
end
return {#due, math.max(0, tonumber(nextDue[2]) - nowMs)}
