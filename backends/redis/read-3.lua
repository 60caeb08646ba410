--[[
  Reads up to COUNT new task entries for this consumer (XREADGROUP, never
  blocking) with each chunk's failure count and whether it already has a
  result, and hands them back as one string. A worker's take() used to get
  them as XREADGROUP's nested reply (eleven values per entry) and two HMGETs:
  decoding those cost the worker more than computing a chunk of a few hundred
  parameters. This reads, looks up and changes nothing else: what to do with
  a chunk that already has a result stays the worker's decision.

  KEYS[1] task stream    (<p>:tasks)
  KEYS[2] attempts hash  (<p>:attempts)   chunk_id -> failures
  KEYS[3] done hash      (<p>:done)       chunk_id -> 1

  ARGV[1] consumer group name
  ARGV[2] consumer name
  ARGV[3] most entries to read

  Returns {lines, others}:
    lines   one line per entry, in stream order, each ending in '\n'; for an
            entry of the shape every ttg writer gives a task (fields chunk_id,
            start_param, end_param, total_params in that order, each value
            decimal digits):
            "<entry id> <chunk_id> <start_param> <end_param> <total_params> <failures> <done>"
            (failures: the attempts hash's value, or 0; done: 1 or 0);
            for any other entry its id alone
    others  those other entries, as XREADGROUP gives them ({id, {field, value, ...}}):
            the worker reads them the long way
]]
local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', KEYS[1], '>')
if not reply then
  return {'', {}}
end

local lines = {}
local others = {}
-- Of each entry of the usual shape: its chunk id, its entry id and values, and its place in lines.
local ids = {}
local heads = {}
local values = {}
local at = {}
for _, entry in ipairs(reply[1][2]) do
  local f = entry[2]
  local line = #f == 8 and f[1] == 'chunk_id' and f[3] == 'start_param' and f[5] == 'end_param' and f[7] == 'total_params'
    and (f[2] .. ' ' .. f[4] .. ' ' .. f[6] .. ' ' .. f[8])
  if line and string.find(line, '^%d+ %d+ %d+ %d+$') then
    lines[#lines + 1] = false
    at[#at + 1] = #lines
    ids[#ids + 1] = f[2]
    heads[#heads + 1] = entry[1]
    values[#values + 1] = line
  else
    lines[#lines + 1] = entry[1] .. '\n'
    others[#others + 1] = entry
  end
end

-- Looked up a thousand at a time (unpack() has a limit on how many values it spreads).
for first = 1, #ids, 1000 do
  local last = math.min(#ids, first + 999)
  local attempts = redis.call('HMGET', KEYS[2], unpack(ids, first, last))
  local done = redis.call('HMGET', KEYS[3], unpack(ids, first, last))
  for i = first, last do
    local failures = attempts[i - first + 1]
    if not failures or not string.find(failures, '^%d+$') then failures = '0' end
    lines[at[i]] = heads[i] .. ' ' .. values[i] .. ' ' .. failures .. (done[i - first + 1] and ' 1\n' or ' 0\n')
  end
end
return {table.concat(lines), others}
