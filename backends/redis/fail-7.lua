--[[
  A chunk failed. If this consumer still owns its entry: count the failure,
  then either schedule a fresh copy of the task for after the retry delay (a
  retry: into the delayed set, which promote-2.lua moves back to the task
  stream once due; straight to the stream when the delay is 0) or, once the
  chunk has failed MAX_RETRIES times, write it to the dead-letter stream.
  Either way the entry is acknowledged.

  Retry semantics (the same for every backend): failures are counted per
  chunk; the failure that brings the count to max_retries dead-letters the
  chunk. With max_retries = 3 a chunk is tried at most 3 times; with 0 or 1
  its first failure dead-letters it. A malformed entry can never succeed, so
  it is dead-lettered at once, without touching the chunk's count, and never
  marks a chunk as settled (even when it borrowed a real chunk id: the
  genuine task of that chunk is still to be done).

  KEYS[1] task stream    (<p>:tasks)
  KEYS[2] dead stream    (<p>:dead)
  KEYS[3] dead hash      (<p>:dead-chunks)  chunk_id -> 1
  KEYS[4] attempts hash  (<p>:attempts)     chunk_id -> failures
  KEYS[5] done hash      (<p>:done)
  KEYS[6] meta hash      (<p>:meta)
  KEYS[7] delayed zset   (<p>:delayed)      retry copy -> due time (ms, Redis clock)

  ARGV[1] consumer group name
  ARGV[2] consumer name
  ARGV[3] task entry id
  ARGV[4] chunk id ('?' when the entry has none)
  ARGV[5] reason
  ARGV[6] worker id
  ARGV[7] max retries
  ARGV[8] '1' when the entry is malformed, else '0'
  ARGV[9] failed_at (ISO-8601)
  ARGV[10] retry delay (ms)
  ARGV[11..] the task's other fields and values (start_param, end_param,
             total_params, as far as the entry has them), alternating

  Returns
    {1, failures}  retried: a fresh copy of the task waits out the delay (or is in the task stream)
    {2, failures}  dead-lettered
    {-1, 0}        this consumer does not own the entry: nothing changed

  An acknowledged entry is trimmed from the task stream with the others no
  group needs (trim-acknowledged.lua), so a dead letter settling the sweep's
  last chunk leaves no acknowledged entry behind.
]]
--- @include "trim-acknowledged"
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
trimAcknowledged(tasks, group)

if malformed or failures >= tonumber(ARGV[7]) then
  redis.call('XADD', KEYS[2], '*',
    'chunk_id', chunkId, 'reason', ARGV[5], 'attempts', failures,
    'worker_id', ARGV[6], 'failed_at', ARGV[9], unpack(ARGV, 11))
  -- Count the chunk as settled only when the task was a genuine chunk of the
  -- sweep (the client checked it: not malformed) and it has no result yet
  -- (see complete-5.lua).
  if not malformed and redis.call('HEXISTS', KEYS[5], chunkId) == 0 then
    redis.call('HSET', KEYS[3], chunkId, '1')
  end
  return {2, failures}
end

local delay = tonumber(ARGV[10])
if delay <= 0 then
  redis.call('XADD', tasks, '*', 'chunk_id', chunkId, unpack(ARGV, 11))
  return {1, failures}
end
-- The member names the failed entry, so two retries of one chunk never collapse into one.
local fields = {'chunk_id', chunkId}
for i = 11, #ARGV do fields[#fields + 1] = ARGV[i] end
local now = redis.call('TIME')
local nowMs = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[7], nowMs + delay, cjson.encode({entryId, fields}))
return {1, failures}
