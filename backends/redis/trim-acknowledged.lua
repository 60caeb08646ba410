--[[
  Not a script of its own: included (`--- @include "trim-acknowledged"`) by
  trim-1.lua, which workers run every few hundred ms, and by complete-5.lua
  (when it settles the sweep's last chunk) and fail-7.lua (after it
  acknowledged), each calling trimAcknowledged(<p>:tasks, <p>-workers).
  Not at every completion: a trim costs about as much as a third of a
  completion call, and a few hundred ms of acknowledged entries are nothing.

  Removes from the head of the task stream the entries the group can no
  longer need: those before both its oldest pending entry and its first
  undelivered one. They were all delivered and acknowledged, and nobody
  reads an acknowledged task entry again: stale
  recovery and a restarted worker work from the group's pending list
  (XAUTOCLAIM, XPENDING, XREADGROUP from 0), `ttg aggregate` and the
  monitor from the results, the done and dead hashes and the group's
  counters. So a finished sweep leaves an empty task stream, instead of every
  chunk's entry for ever.

  Why XTRIM MINID rather than XDEL of each entry as it is acknowledged:
  trimming the head leaves no tombstone behind, so XINFO GROUPS keeps an
  exact `lag` (the chunks ready to take, for `ttg monitor` and KEDA's
  lagCount), which an XDEL of the last delivered entry would turn into nil.
  And an entry still pending anywhere (a chunk in a worker's hands, or one
  taken over from a worker that stopped answering) is never removed: it
  holds back the trimming of later entries until it is acknowledged, which
  costs memory for a while but can lose nothing. Entries added later (retry
  copies, re-driven dead letters) come after the last delivered one and are
  trimmed the same way once acknowledged.

  Cost: a stream keeps its entries in nodes of up to 100; while entries
  are pending it trims whole nodes only (XTRIM MINID ~), a microsecond or
  two when there is nothing to remove, where an exact trim would scan the
  node holding the bound at every call (and a partly trimmed node frees no
  memory anyway). Once nothing is pending and nothing waits (pending 0, lag
  0) every entry is acknowledged and it empties the stream exactly, so a
  finished sweep leaves XLEN 0.

  The task stream is ttg's own: only its group `<p>-workers` is looked at
  (another group attached to it by hand would see entries it has not read
  go away).

  Never raises: when the bound cannot be worked out (the stream or its group
  gone, an unexpected reply) it trims nothing, so it can never fail the
  completion or failure around it. Returns how many entries it removed.
]]

-- The smallest stream id after `id` (same milliseconds, sequence + 1), in
-- string arithmetic: the sequence is a 64-bit decimal, beyond a Lua double's
-- exact range. nil for anything but an id.
local function nextStreamId(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if not ms then return nil end
  local i = #seq
  while i > 0 and string.sub(seq, i, i) == '9' do i = i - 1 end
  if i == 0 then return ms .. '-1' .. string.rep('0', #seq) end
  return ms .. '-' .. string.sub(seq, 1, i - 1) .. (tonumber(string.sub(seq, i, i)) + 1) .. string.rep('0', #seq - i)
end

local function trimAcknowledged(stream, group)
  local removed
  -- The group's oldest pending entry, if any, bounds the trim: it and everything after it stay.
  local oldest = redis.pcall('XPENDING', stream, group, '-', '+', 1)
  if type(oldest) ~= 'table' or oldest.err then return 0 end
  if #oldest > 0 then
    removed = redis.pcall('XTRIM', stream, 'MINID', '~', oldest[1][1])
  else
    -- Nothing pending: everything up to the last delivered entry is acknowledged.
    local groups = redis.pcall('XINFO', 'GROUPS', stream)
    if type(groups) ~= 'table' or groups.err then return 0 end
    local info
    for _, g in ipairs(groups) do
      for f = 1, #g - 1, 2 do
        if g[f] == 'name' and g[f + 1] == group then info = g end
      end
    end
    if not info then return 0 end
    local lastDelivered, lag
    for f = 1, #info - 1, 2 do
      if info[f] == 'last-delivered-id' then lastDelivered = info[f + 1] end
      if info[f] == 'lag' then lag = info[f + 1] end
    end
    if lag == 0 then
      -- Nothing waits either (lag is nil where Redis cannot tell): every entry is acknowledged.
      removed = redis.pcall('XTRIM', stream, 'MAXLEN', 0)
    else
      local bound = type(lastDelivered) == 'string' and nextStreamId(lastDelivered)
      if not bound then return 0 end
      removed = redis.pcall('XTRIM', stream, 'MINID', '~', bound)
    end
  end
  if type(removed) ~= 'number' then return 0 end
  return removed
end

