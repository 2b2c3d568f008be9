-- Sets one plan assignment and moves the mark, in one step. A single key, so cluster-safe.
--
-- KEYS[1]  the hash of API key digest -> plan name
-- ARGV[1]  the digest
-- ARGV[2]  the plan, or '' to take the key off its plan
--
-- Returns the new mark.
local key = KEYS[1]
if ARGV[2] == '' then
  redis.call('HDEL', key, ARGV[1])
else
  redis.call('HSET', key, ARGV[1], ARGV[2])
end
return next_mark(key)
