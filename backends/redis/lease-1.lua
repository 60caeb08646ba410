--[[
  The lease on a consumer name (worker-<id>): a process that holds it may
  use the name; it keeps it by renewing before the lease expires. Another
  live process with the same WORKER_ID finds it held and picks another
  name; a restarted process finds it expired and takes the name back,
  with the entries its predecessor left pending.

  KEYS[1] lease key (<p>:consumer:<name>)

  ARGV[1] this process's nonce
  ARGV[2] lease time, in milliseconds
  ARGV[3] 'hold' (take or renew) or 'drop' (give it up)

  Returns
    1  hold: this process holds the lease now; drop: it no longer holds it
    0  another process holds the lease
]]
local key = KEYS[1]
local holder = redis.call('GET', key)

if ARGV[3] == 'drop' then
  if holder == ARGV[1] then
    redis.call('DEL', key)
  end
  return 1
end

if holder == ARGV[1] then
  redis.call('PEXPIRE', key, ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
