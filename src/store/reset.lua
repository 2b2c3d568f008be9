-- Forgets a bucket: deletes its ring (appended to ring.lua). A single key, so cluster-safe.
--
-- KEYS[1]  the bucket's ring
-- ARGV[1]  the retention in µs (the longest window of the route's rules), to tell how many of the
--          deleted slots were still counted
--
-- Returns the number of slots that lay in that window.
local key = KEYS[1]
local count = used(open(key), ARGV[1] + 0, clock())
redis.call('DEL', key)
return count
