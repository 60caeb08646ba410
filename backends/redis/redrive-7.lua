--[[
  Puts dead-lettered chunks back on the task stream with fresh attempts
  (`ttg retry-dead`), all or nothing. Each chunk leaves the dead hash (so the
  sweep is no longer settled by it), loses its failure count, gets a fresh
  task entry, and a re-drive record: how often it was re-driven, and the
  dead-letter stream's last entry id when it was (its dead letters up to that
  id are re-driven; a later one means it died again). One script, so two
  `ttg retry-dead` at once never queue a chunk twice: the second finds it no
  longer dead.

  KEYS[1] meta hash      (<p>:meta)
  KEYS[2] task stream    (<p>:tasks)
  KEYS[3] dead hash      (<p>:dead-chunks)  chunk_id -> 1
  KEYS[4] attempts hash  (<p>:attempts)
  KEYS[5] done hash      (<p>:done)
  KEYS[6] dead stream    (<p>:dead)
  KEYS[7] re-drive hash  (<p>:redrives)     chunk_id -> cjson {count, after, at}

  ARGV[1] redriven_at (ISO-8601)
  ARGV[2..] the chunk ids to re-drive; none: every dead-lettered chunk

  Returns
    {1, chunk_id, ...}    re-driven, in order (no ids: nothing was dead)
    {-4, chunk_id, why}   nothing changed: that chunk is 'not-a-chunk' of the sweep, 'completed' or 'not-dead'
    {-3}                  there is no sweep
]]
local meta = redis.call('HMGET', KEYS[1], 'total_params', 'chunk_size', 'total_chunks', 'chunk_id_width')
if not meta[3] then
  return {-3}
end
local totalParams = tonumber(meta[1])
local chunkSize = tonumber(meta[2])
local totalChunks = tonumber(meta[3])
local width = tonumber(meta[4])

local ids = {}
if #ARGV > 1 then
  -- Every id is checked before anything changes.
  for i = 2, #ARGV do
    local id = ARGV[i]
    if not (#id == width and string.match(id, '^%d+$') and tonumber(id) < totalChunks) then
      return {-4, id, 'not-a-chunk'}
    end
    if redis.call('HEXISTS', KEYS[5], id) == 1 then
      return {-4, id, 'completed'}
    end
    if redis.call('HEXISTS', KEYS[3], id) == 0 then
      return {-4, id, 'not-dead'}
    end
    ids[#ids + 1] = id
  end
else
  ids = redis.call('HKEYS', KEYS[3])
  table.sort(ids)
end

local last = redis.call('XREVRANGE', KEYS[6], '+', '-', 'COUNT', 1)
local after = '0-0'
if #last > 0 then
  after = last[1][1]
end

local out = {1}
for _, id in ipairs(ids) do
  -- HDEL answers 0 for an id given twice: queued once.
  if redis.call('HDEL', KEYS[3], id) == 1 then
    redis.call('HDEL', KEYS[4], id)
    local count = 1
    local previous = redis.call('HGET', KEYS[7], id)
    if previous then
      count = tonumber(cjson.decode(previous)['count']) + 1
    end
    redis.call('HSET', KEYS[7], id, cjson.encode({count = count, after = after, at = ARGV[1]}))
    local startParam = tonumber(id) * chunkSize
    redis.call('XADD', KEYS[2], '*',
      'chunk_id', id,
      'start_param', string.format('%d', startParam),
      'end_param', string.format('%d', math.min(totalParams, startParam + chunkSize)),
      'total_params', meta[1])
    out[#out + 1] = id
  end
end
return out
