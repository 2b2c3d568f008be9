-- Writes a replica's copy of the plan assignments back into a hash that has lost them (a Redis
-- restarted without persistence, the hash deleted or evicted), in one step, and only while the
-- hash has no mark: of the replicas that find it gone, the first one restores and the others
-- write nothing, and a restore never overwrites a change made since. A single key, so
-- cluster-safe.
--
-- KEYS[1]  the hash of API key digest -> plan name
-- ARGV     digest, plan, digest, plan, ...
--
-- Returns the new mark, or nil when the hash has a mark (nothing written).
local key = KEYS[1]
if redis.call('HEXISTS', key, VERSION) == 1 then
  return false
end
for i = 1, #ARGV, 2 do
  redis.call('HSET', key, ARGV[i], ARGV[i + 1])
end
return next_mark(key)
