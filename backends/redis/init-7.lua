--[[
  Creates the sweep, or joins the one already there, and adds its tasks in
  batches. Every worker calls this at start-up, then again from its first
  take on (sweep-tasks.ts), until tasks_added reaches total_chunks: the
  first call anywhere creates the meta hash and the consumer group and adds
  the first batch; any later call (by the creator or by a joining worker)
  adds the next batch. Each call is
  atomic, so workers starting together never add a chunk twice, and nobody
  has to wait for the creator: whoever arrives helps to finish the job.

  Tasks are generated here from (total_params, chunk_size) rather than sent
  in ARGV, so a 100 000-chunk sweep costs no huge command. Lua numbers are
  doubles: exact for integers below 2^53, and config caps TOTAL_PARAMS at
  2^48; string.format('%d') prints them without exponent.

  KEYS[1] meta hash      (<p>:meta)
  KEYS[2] task stream    (<p>:tasks)
  KEYS[3] result stream  (<p>:results)
  KEYS[4] done hash      (<p>:done)
  KEYS[5] dead stream    (<p>:dead)
  KEYS[6] dead hash      (<p>:dead-chunks)
  KEYS[7] attempts hash  (<p>:attempts)

  ARGV[1] consumer group name
  ARGV[2] total_params
  ARGV[3] chunk_size
  ARGV[4] kernel
  ARGV[5] total_chunks    (computed by the caller, so Lua and TS agree)
  ARGV[6] chunk_id_width  (zero-padding of chunk ids)
  ARGV[7] created_at      (ISO-8601)
  ARGV[8] most tasks to add in this call
  ARGV[9] '1': only add tasks to a sweep that exists (a worker adding the
          rest of the tasks after its start must not re-create a sweep that
          `ttg reset` removed meanwhile)

  Returns
    {1, total_chunks, tasks_added}  this call created the sweep
    {0, total_chunks, tasks_added}  the sweep existed with the same settings
    {-2, total_params, chunk_size, kernel}  the sweep in the queue differs
    {-3, 0, 0}                   ARGV[9] is '1' and there is no sweep
]]
local meta = KEYS[1]
local tasks = KEYS[2]
local code = 0

if redis.call('EXISTS', meta) == 1 then
  local stored = redis.call('HMGET', meta, 'total_params', 'chunk_size', 'kernel')
  if stored[1] ~= ARGV[2] or stored[2] ~= ARGV[3] or stored[3] ~= ARGV[4] then
    return {-2, stored[1] or '', stored[2] or '', stored[3] or ''}
  end
elseif ARGV[9] == '1' then
  return {-3, 0, 0}
else
  -- No sweep: anything left under this prefix without a meta hash is debris
  -- of an interrupted reset; start from a clean slate.
  redis.call('DEL', tasks, KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
  redis.call('XGROUP', 'CREATE', tasks, ARGV[1], '0', 'MKSTREAM')
  redis.call('HSET', meta,
    'total_params', ARGV[2], 'chunk_size', ARGV[3], 'kernel', ARGV[4],
    'total_chunks', ARGV[5], 'chunk_id_width', ARGV[6],
    'tasks_added', '0', 'created_at', ARGV[7])
  code = 1
end

local state = redis.call('HMGET', meta, 'total_params', 'chunk_size', 'total_chunks', 'chunk_id_width', 'tasks_added')
local totalParams = tonumber(state[1])
local chunkSize = tonumber(state[2])
local totalChunks = tonumber(state[3])
local idFormat = '%0' .. state[4] .. 'd'
local added = tonumber(state[5])
local last = math.min(totalChunks, added + tonumber(ARGV[8])) - 1
local totalText = state[1]

for i = added, last do
  local startParam = i * chunkSize
  local endParam = math.min(totalParams, startParam + chunkSize)
  redis.call('XADD', tasks, '*',
    'chunk_id', string.format(idFormat, i),
    'start_param', string.format('%d', startParam),
    'end_param', string.format('%d', endParam),
    'total_params', totalText)
end
if last >= added then
  redis.call('HSET', meta, 'tasks_added', string.format('%d', last + 1))
  added = last + 1
end

return {code, totalChunks, added}
