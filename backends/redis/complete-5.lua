--[[
  Publishes chunk results and acknowledges their task entries, each as one
  step, only while this consumer still owns the entry. A worker whose entry
  was taken over by stale recovery publishes nothing for it, so the chunk is
  counted from whoever holds it now. Several chunks travel in one call (the
  worker batches the completions that are ready together); each is checked
  and settled on its own, exactly as if it came alone.

  KEYS[1] task stream    (<p>:tasks)
  KEYS[2] result stream  (<p>:results)
  KEYS[3] done hash      (<p>:done)       chunk_id -> 1
  KEYS[4] dead hash      (<p>:dead-chunks)
  KEYS[5] meta hash      (<p>:meta)

  ARGV[1] consumer group name
  ARGV[2] consumer name
  ARGV[3] pub/sub channel told 'settled' when this call settles the sweep's last chunk
  ARGV[4] the results' worker_id, ARGV[5] their status, ARGV[6] their consumer ('' for none):
          the same for every chunk of a call
  ARGV[7] the chunks, one line each, ending in '\n', of eight values separated by tabs:
          task entry id, chunk id, duration_seconds, completed_at, started_at, recovered,
          attempts, result_data ('' for an optional field the result does not have); in
          completed_at and started_at a tab, a newline and a backslash come as \t, \n and \\
          (one argument rather than a dozen per chunk, and lines rather than JSON: building,
          sending and decoding a batch's arguments cost the worker more than the script costs Redis)

  Returns one code per chunk, in order:
     1  published; the first result of this chunk
     2  published; the chunk already had a result (a duplicate)
    -1  this consumer does not own the entry: nothing published
    -3  the sweep is gone (reset while the chunk was worked on): nothing published

  The call that settles the sweep's last chunk also trims the task stream
  (trim-acknowledged.lua), so a finished sweep leaves no acknowledged task
  entry behind; before that, workers trim it every few hundred ms (trim-1.lua).
]]
--- @include "trim-acknowledged"
local tasks = KEYS[1]
local group = ARGV[1]
local consumer = ARGV[2]
local workerId = ARGV[4]
local status = ARGV[5]
local consumerField = ARGV[6]
local codes = {}
local acked = {}
local owned = {}

local sweep = redis.call('HMGET', KEYS[5], 'total_chunks', 'chunk_id_width')
local totalChunks = tonumber(sweep[1])
local idWidth = tonumber(sweep[2])
local anyDead = totalChunks and redis.call('HLEN', KEYS[4]) > 0
local newlyDone = 0

local unescapes = {t = '\t', n = '\n', ['\\'] = '\\'}
local function text(value)
  if string.find(value, '\\', 1, true) then
    return (string.gsub(value, '\\(.)', unescapes))
  end
  return value
end

local pattern = '^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$'
for line in string.gmatch(ARGV[7], '([^\n]*)\n') do
  local entryId, chunkId, duration, completedAt, startedAt, recovered, attempts, data = string.match(line, pattern)
  local code
  -- The sweep's meta hash goes with `ttg reset`: say so, rather than "not the owner".
  -- An entry is this consumer's while pending under its name and not yet acknowledged by this call.
  local pending = totalChunks and not acked[entryId] and redis.pcall('XPENDING', tasks, group, entryId, entryId, 1, consumer)
  if not totalChunks then
    code = -3
  elseif type(pending) ~= 'table' or pending.err or #pending == 0 then
    code = -1
  else
    acked[entryId] = true
    owned[#owned + 1] = entryId
    local fields = {'chunk_id', chunkId, 'worker_id', workerId, 'status', status,
      'duration_seconds', duration, 'completed_at', text(completedAt)}
    local n = 10
    if startedAt ~= '' then fields[n + 1] = 'started_at'; fields[n + 2] = text(startedAt); n = n + 2 end
    if recovered ~= '' then fields[n + 1] = 'recovered'; fields[n + 2] = recovered; n = n + 2 end
    if attempts ~= '' then fields[n + 1] = 'attempts'; fields[n + 2] = attempts; n = n + 2 end
    if consumerField ~= '' then fields[n + 1] = 'consumer'; fields[n + 2] = consumerField; n = n + 2 end
    fields[n + 1] = 'result_data'
    fields[n + 2] = data
    redis.call('XADD', KEYS[2], '*', unpack(fields, 1, n + 2))
    -- Only a canonical id of this sweep counts towards completion, so a
    -- hand-made entry named 'abc' or '99999' cannot make the sweep look settled.
    local isChunk = #chunkId == idWidth and string.match(chunkId, '^%d+$') ~= nil
      and tonumber(chunkId) < totalChunks
    if not isChunk then
      code = 1
    else
      -- A chunk that has a result is no longer dead, whatever happened before.
      if anyDead then redis.call('HDEL', KEYS[4], chunkId) end
      if redis.call('HSETNX', KEYS[3], chunkId, '1') == 1 then
        code = 1
        newlyDone = newlyDone + 1
      else
        code = 2
      end
    end
  end
  codes[#codes + 1] = code
end
-- The entries published for are acknowledged together (the call is atomic: nobody sees them in between).
for first = 1, #owned, 1000 do
  redis.call('XACK', tasks, group, unpack(owned, first, math.min(#owned, first + 999)))
end

-- Wake the workers waiting for tasks: the sweep is over, they can leave now.
if newlyDone > 0 and redis.call('HLEN', KEYS[3]) + redis.call('HLEN', KEYS[4]) >= totalChunks then
  redis.call('PUBLISH', ARGV[3], 'settled')
  -- Nobody reads an acknowledged task entry again: free them now, once, as the workers leave.
  trimAcknowledged(tasks, group)
end
return codes
