-- One check of an exact sliding-window quota (a sliding log), atomically.
--
-- KEYS[1]  the bucket's log: a sorted set of admitted requests scored by their time in µs
-- ARGV[1]  limit: requests admitted per window
-- ARGV[2]  window length in µs
--
-- Returns {allowed (1|0), remaining, reset_us, now_us}, where reset_us is the moment one more
-- request will be admitted: the oldest counted request leaves the window (or, after a limit was
-- lowered, the one whose departure brings the count below the limit).
--
-- Time comes from the Redis server, so tollgate replicas with skewed clocks agree. Denied
-- requests are not recorded, so they consume no quota.
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

-- A request admitted at t is counted while now < t + window.
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local count = redis.call('ZCARD', key)

if count < limit then
  -- Unique member: within one microsecond the count grows with every admitted request.
  redis.call('ZADD', key, now, time[1] .. '.' .. time[2] .. '.' .. count)
  redis.call('PEXPIRE', key, math.ceil(window / 1000))
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {1, limit - count - 1, tonumber(oldest[2]) + window, now}
end

local blocking = redis.call('ZRANGE', key, count - limit, count - limit, 'WITHSCORES')
return {0, 0, tonumber(blocking[2]) + window, now}
