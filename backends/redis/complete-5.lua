--[[
  Publishes a chunk's result and acknowledges its task entry, as one step,
  only while this consumer still owns the entry. A worker whose entry was
  taken over by stale recovery publishes nothing, so the chunk is counted
  from whoever holds it now.

  KEYS[1] task stream    (<p>:tasks)
  KEYS[2] result stream  (<p>:results)
  KEYS[3] done hash      (<p>:done)       chunk_id -> 1
  KEYS[4] dead hash      (<p>:dead-chunks)
  KEYS[5] meta hash      (<p>:meta)

  ARGV[1] consumer group name
  ARGV[2] consumer name
  ARGV[3] task entry id
  ARGV[4] chunk id
  ARGV[5..] result fields and values, alternating

  Returns
     1  published; the first result of this chunk
     2  published; the chunk already had a result (a duplicate)
    -1  this consumer does not own the entry: nothing published
    -3  the sweep is gone (reset while the chunk was worked on): nothing published
]]
local tasks = KEYS[1]
local group = ARGV[1]
local consumer = ARGV[2]
local entryId = ARGV[3]
local chunkId = ARGV[4]

-- XPENDING fails when the group was deleted (reset): not ours any more either.
local pending = redis.pcall('XPENDING', tasks, group, entryId, entryId, 1, consumer)
if type(pending) ~= 'table' or pending.err or #pending == 0 then
  return -1
end

local sweep = redis.call('HMGET', KEYS[5], 'total_chunks', 'chunk_id_width')
if not sweep[1] then
  return -3
end

redis.call('XACK', tasks, group, entryId)
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 5))

-- Only a canonical id of this sweep counts towards completion, so a
-- hand-made entry named 'abc' or '99999' cannot make the sweep look settled.
local isChunk = #chunkId == tonumber(sweep[2]) and string.match(chunkId, '^%d+$') ~= nil
  and tonumber(chunkId) < tonumber(sweep[1])
if not isChunk then
  return 1
end
-- A chunk that has a result is no longer dead, whatever happened before.
redis.call('HDEL', KEYS[4], chunkId)
if redis.call('HSETNX', KEYS[3], chunkId, '1') == 1 then
  return 1
end
return 2
