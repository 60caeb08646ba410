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
  ARGV[4] the chunks, as one JSON array with per chunk an array of: task entry id, chunk id, and
          the array of result fields and values, alternating
          (one argument rather than a dozen per chunk: building and sending the arguments of a
          batch one by one cost the worker more than the script costs Redis)

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
local codes = {}

local sweep = redis.call('HMGET', KEYS[5], 'total_chunks', 'chunk_id_width')
local totalChunks = tonumber(sweep[1])
local idWidth = tonumber(sweep[2])
local newlyDone = 0

for _, chunk in ipairs(cjson.decode(ARGV[4])) do
  local entryId = chunk[1]
  local chunkId = chunk[2]
  local code
  -- The sweep's meta hash goes with `ttg reset`: say so, rather than "not the owner".
  local pending = totalChunks and redis.pcall('XPENDING', tasks, group, entryId, entryId, 1, consumer)
  if not totalChunks then
    code = -3
  elseif type(pending) ~= 'table' or pending.err or #pending == 0 then
    code = -1
  else
    redis.call('XACK', tasks, group, entryId)
    redis.call('XADD', KEYS[2], '*', unpack(chunk[3]))
    -- Only a canonical id of this sweep counts towards completion, so a
    -- hand-made entry named 'abc' or '99999' cannot make the sweep look settled.
    local isChunk = #chunkId == idWidth and string.match(chunkId, '^%d+$') ~= nil
      and tonumber(chunkId) < totalChunks
    if not isChunk then
      code = 1
    else
      -- A chunk that has a result is no longer dead, whatever happened before.
      redis.call('HDEL', KEYS[4], chunkId)
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

-- Wake the workers waiting for tasks: the sweep is over, they can leave now.
if newlyDone > 0 and redis.call('HLEN', KEYS[3]) + redis.call('HLEN', KEYS[4]) >= totalChunks then
  redis.call('PUBLISH', ARGV[3], 'settled')
  -- Nobody reads an acknowledged task entry again: free them now, once, as the workers leave.
  trimAcknowledged(tasks, group)
end
return codes
