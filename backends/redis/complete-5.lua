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

  Returns one code per chunk, in order, as one string of one character each
  (an array of integers cost the worker's reply decoder ~0.6 us a chunk):
    '1'  published; the first result of this chunk
    '2'  published; the chunk already had a result (a duplicate)
    'n'  this consumer does not own the entry: nothing published (code -1)
    'g'  the sweep is gone (reset while the chunk was worked on): nothing published (code -3)

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

local sweep = redis.call('HMGET', KEYS[5], 'total_chunks', 'chunk_id_width')
local totalChunks = tonumber(sweep[1])
local idWidth = tonumber(sweep[2])

local unescapes = {t = '\t', n = '\n', ['\\'] = '\\'}
local function text(value)
  if string.find(value, '\\', 1, true) then
    return (string.gsub(value, '\\(.)', unescapes))
  end
  return value
end

-- Split with plain finds (memchr), not patterns: Lua's matcher tests every character against a class.
local chunks = {}
local lines = ARGV[7]
local find, sub = string.find, string.sub
local at = 1
local size = #lines
while at <= size do
  local c = {}
  for j = 1, 7 do
    local tab = find(lines, '\t', at, true)
    c[j] = sub(lines, at, tab - 1)
    at = tab + 1
  end
  local nl = find(lines, '\n', at, true)
  c[8] = sub(lines, at, nl - 1)
  at = nl + 1
  chunks[#chunks + 1] = c
end
local n = #chunks
local codes = {}

-- The sweep's meta hash goes with `ttg reset`: say so, rather than "not the owner".
if not totalChunks then
  return string.rep('g', n)
end

-- Which entries this consumer holds: its oldest pending entries, in one XPENDING, are usually the
-- very ones of this call (a worker commits in the order it took); any other is looked up alone.
local pending = {}
local oldest = redis.pcall('XPENDING', tasks, group, '-', '+', n + 16, consumer)
if type(oldest) == 'table' and not oldest.err then
  for _, p in ipairs(oldest) do pending[p[1]] = true end
end
local function holds(entryId)
  if pending[entryId] then return true end
  local one = redis.pcall('XPENDING', tasks, group, entryId, entryId, 1, consumer)
  return type(one) == 'table' and not one.err and #one > 0
end

-- Which chunks have a result already, in one HMGET.
local canonical = {}
local ids = {}
for i, c in ipairs(chunks) do
  -- Only a canonical id of this sweep counts towards completion, so a
  -- hand-made entry named 'abc' or '99999' cannot make the sweep look settled.
  local chunkId = c[2]
  if #chunkId == idWidth and string.match(chunkId, '^%d+$') ~= nil and tonumber(chunkId) < totalChunks then
    canonical[i] = true
    ids[#ids + 1] = chunkId
  end
end
local done = {}
for first = 1, #ids, 1000 do
  local last = math.min(#ids, first + 999)
  local had = redis.call('HMGET', KEYS[3], unpack(ids, first, last))
  for j = first, last do
    if had[j - first + 1] then done[ids[j]] = true end
  end
end

-- The entries this consumer holds are acknowledged first, together (a refused XACK then leaves
-- nothing half done); an entry counts once, however often it is in the call.
local acked = {}
local owned = {}
for i, c in ipairs(chunks) do
  if acked[c[1]] or not holds(c[1]) then
    codes[i] = -1
  else
    acked[c[1]] = true
    owned[#owned + 1] = c[1]
  end
end
for first = 1, #owned, 1000 do
  redis.call('XACK', tasks, group, unpack(owned, first, math.min(#owned, first + 999)))
end

local anyDead = redis.call('HLEN', KEYS[4]) > 0
local newly = {}
for i, c in ipairs(chunks) do
  local entryId, chunkId, duration, completedAt, startedAt, recovered, attempts, data =
    c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
  if codes[i] == nil then
    if startedAt ~= '' and recovered == '' and attempts == '' and consumerField ~= '' then
      -- A first attempt's result, as every worker sends most: its fields passed as they are (no table to fill and unpack).
      redis.call('XADD', KEYS[2], '*', 'chunk_id', chunkId, 'worker_id', workerId, 'status', status,
        'duration_seconds', duration, 'completed_at', text(completedAt), 'started_at', text(startedAt),
        'consumer', consumerField, 'result_data', data)
    else
      local fields = {'chunk_id', chunkId, 'worker_id', workerId, 'status', status,
        'duration_seconds', duration, 'completed_at', text(completedAt)}
      local k = 10
      if startedAt ~= '' then fields[k + 1] = 'started_at'; fields[k + 2] = text(startedAt); k = k + 2 end
      if recovered ~= '' then fields[k + 1] = 'recovered'; fields[k + 2] = recovered; k = k + 2 end
      if attempts ~= '' then fields[k + 1] = 'attempts'; fields[k + 2] = attempts; k = k + 2 end
      if consumerField ~= '' then fields[k + 1] = 'consumer'; fields[k + 2] = consumerField; k = k + 2 end
      fields[k + 1] = 'result_data'
      fields[k + 2] = data
      redis.call('XADD', KEYS[2], '*', unpack(fields, 1, k + 2))
    end
    if not canonical[i] then
      codes[i] = 1
    else
      -- A chunk that has a result is no longer dead, whatever happened before.
      if anyDead then redis.call('HDEL', KEYS[4], chunkId) end
      if done[chunkId] then
        codes[i] = 2
      else
        codes[i] = 1
        done[chunkId] = true
        newly[#newly + 1] = chunkId
        newly[#newly + 1] = '1'
      end
    end
  end
end
-- The chunks done for the first time, recorded together.
for first = 1, #newly, 2000 do
  redis.call('HSET', KEYS[3], unpack(newly, first, math.min(#newly, first + 1999)))
end
local newlyDone = #newly / 2

-- Wake the workers waiting for tasks: the sweep is over, they can leave now.
if newlyDone > 0 and redis.call('HLEN', KEYS[3]) + redis.call('HLEN', KEYS[4]) >= totalChunks then
  redis.call('PUBLISH', ARGV[3], 'settled')
  -- Nobody reads an acknowledged task entry again: free them now, once, as the workers leave.
  trimAcknowledged(tasks, group)
end
local letters = {[1] = '1', [2] = '2', [-1] = 'n'}
for i = 1, n do codes[i] = letters[codes[i]] end
return table.concat(codes)
