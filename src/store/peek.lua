-- Reads a bucket without counting a request (appended to ring.lua): nothing is written, so
-- reading never consumes quota. A single key, so cluster-safe.
--
-- KEYS[1]  the bucket's ring
-- ARGV     pairs of requests admitted per window and window length in µs, as for check.lua
--
-- Returns {now_us, then per window: used, remaining, reset_us}, computed exactly as check.lua
-- would.
local now = clock()
local ring = open(KEYS[1])
local reply = {now}
for i = 1, #ARGV, 2 do
  usage(ring, ARGV[i] + 0, ARGV[i + 1] + 0, now, reply)
end
return reply
