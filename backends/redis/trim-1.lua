--[[
  Drops from the head of the task stream the entries nobody needs any more:
  delivered and acknowledged, before the group's oldest pending entry and
  its first undelivered one (the rule and why it is safe: trim-acknowledged.lua).
  Workers run it every few hundred ms beside promote-2.lua, so a running
  sweep's acknowledged entries go as it progresses, at no cost to the
  completions themselves; complete-5.lua and fail-7.lua trim once more when
  they settle or dead-letter.

  KEYS[1] task stream    (<p>:tasks)

  ARGV[1] consumer group name

  Returns how many entries were removed (0 when the stream or group is gone).
]]
--- @include "trim-acknowledged"
return trimAcknowledged(KEYS[1], ARGV[1])
