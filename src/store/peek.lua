-- Reads a sliding-window quota without counting a request: nothing is written, so reading never
-- consumes quota. Same key layout as sliding_window.lua and a single key, so cluster-safe.
--
-- KEYS[1]  the bucket's log: a sorted set of admitted requests scored by their time in µs
-- ARGV[1]  limit: requests admitted per window
-- ARGV[2]  window length in µs
--
-- Returns {used, remaining, reset_us, now_us}: the requests counted in the trailing window, those
-- still admitted now, and the moment one more request will be admitted (now when the bucket is
-- empty), computed exactly as sliding_window.lua would.
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

-- A request admitted at t is counted while now < t + window; older entries are only skipped here
-- (the next check removes them).
local used = redis.call('ZCOUNT', key, '(' .. (now - window), '+inf')
if used == 0 then
  return {0, limit, now, now}
end
-- The counted entries are the newest `used` of the set.
local first = redis.call('ZCARD', key) - used
if used < limit then
  local oldest = redis.call('ZRANGE', key, first, first, 'WITHSCORES')
  return {used, limit - used, tonumber(oldest[2]) + window, now}
end
local blocking = redis.call('ZRANGE', key, first + used - limit, first + used - limit, 'WITHSCORES')
return {used, 0, tonumber(blocking[2]) + window, now}
