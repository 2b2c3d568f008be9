-- Forgets a bucket: deletes its log. Same key layout as sliding_window.lua and a single key, so
-- cluster-safe.
--
-- KEYS[1]  the bucket's log: a sorted set of admitted requests scored by their time in µs
-- ARGV[1]  window length in µs, to tell how many of the deleted requests were still counted
--
-- Returns the number of requests that lay in the trailing window.
local key = KEYS[1]
local window = tonumber(ARGV[1])

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

local used = redis.call('ZCOUNT', key, '(' .. (now - window), '+inf')
redis.call('DEL', key)
return used
