-- Sets one plan assignment and counts the change, in one step: replicas poll the count (the
-- '#version' field) and read the whole hash only after it moved. A single key, so cluster-safe.
--
-- KEYS[1]  the hash of API key digest -> plan name
-- ARGV[1]  the digest
-- ARGV[2]  the plan, or '' to take the key off its plan
--
-- Returns the new version.
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return redis.call('HINCRBY', KEYS[1], '#version', 1)
