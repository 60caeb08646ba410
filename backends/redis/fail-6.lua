--[[
  A chunk failed. If this consumer still owns its entry: count the failure,
  then either put a fresh copy of the task at the end of the task stream (a
  retry) or, once the chunk has failed RABBITMQ_MAX_RETRIES times, write it
  to the dead-letter stream. Either way the entry is acknowledged.

  Retry semantics (the same for every backend): failures are counted per
  chunk; the failure that brings the count to max_retries dead-letters the
  chunk. With max_retries = 3 a chunk is tried at most 3 times; with 0 or 1
  its first failure dead-letters it. A malformed entry can never succeed, so
  it is dead-lettered at once, without touching the chunk's count.

  KEYS[1] task stream    (<p>:tasks)
  KEYS[2] dead stream    (<p>:dead)
  KEYS[3] dead hash      (<p>:dead-chunks)  chunk_id -> 1
  KEYS[4] attempts hash  (<p>:attempts)     chunk_id -> failures
  KEYS[5] done hash      (<p>:done)
  KEYS[6] meta hash      (<p>:meta)

  ARGV[1] consumer group name
  ARGV[2] consumer name
  ARGV[3] task entry id
  ARGV[4] chunk id ('?' when the entry has none)
  ARGV[5] reason
  ARGV[6] worker id
  ARGV[7] max retries
  ARGV[8] '1' when the entry is malformed, else '0'
  ARGV[9] failed_at (ISO-8601)
  ARGV[10..] the task's other fields and values (start_param, end_param,
             total_params, as far as the entry has them), alternating

  Returns
    {1, failures}  retried: a fresh copy of the task is in the task stream
    {2, failures}  dead-lettered
    {-1, 0}        this consumer does not own the entry: nothing changed
]]
local tasks = KEYS[1]
local group = ARGV[1]
local consumer = ARGV[2]
local entryId = ARGV[3]
local chunkId = ARGV[4]
local malformed = ARGV[8] == '1'

local pending = redis.pcall('XPENDING', tasks, group, entryId, entryId, 1, consumer)
if type(pending) ~= 'table' or pending.err or #pending == 0 then
  return {-1, 0}
end

local failures = 1
if not malformed then
  failures = redis.call('HINCRBY', KEYS[4], chunkId, 1)
end

redis.call('XACK', tasks, group, entryId)

if malformed or failures >= tonumber(ARGV[7]) then
  redis.call('XADD', KEYS[2], '*',
    'chunk_id', chunkId, 'reason', ARGV[5], 'attempts', failures,
    'worker_id', ARGV[6], 'failed_at', ARGV[9], unpack(ARGV, 10))
  -- Count the chunk as settled only when the id is one of this sweep's
  -- chunks and it has no result yet (see complete-5.lua).
  local sweep = redis.call('HMGET', KEYS[6], 'total_chunks', 'chunk_id_width')
  local isChunk = sweep[1] and #chunkId == tonumber(sweep[2]) and string.match(chunkId, '^%d+$') ~= nil
    and tonumber(chunkId) < tonumber(sweep[1])
  if isChunk and redis.call('HEXISTS', KEYS[5], chunkId) == 0 then
    redis.call('HSET', KEYS[3], chunkId, '1')
  end
  return {2, failures}
end

redis.call('XADD', tasks, '*', 'chunk_id', chunkId, unpack(ARGV, 10))
return {1, failures}
