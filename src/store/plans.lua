-- Sets one plan assignment and marks the change, in one step: replicas poll the mark (the
-- '#version' field) and read the whole hash only after it moved. The mark is a counter and the
-- server's time, so a failover to a replica that had not seen the last changes cannot hand out a
-- mark a tollgate replica already holds for other contents. A single key, so cluster-safe.
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
local previous = redis.call('HGET', key, '#version')
local count = tonumber(previous and string.match(previous, '^(%d+)') or '0') + 1
local time = redis.call('TIME')
local mark = count .. '-' .. time[1] .. time[2]
redis.call('HSET', key, '#version', mark)
return mark
