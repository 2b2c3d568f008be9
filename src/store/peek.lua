-- Reads a bucket without counting a request (appended to ring.lua): nothing is written, so
-- reading never consumes quota. A single key, so cluster-safe.
--
-- KEYS[1]  the bucket's ring
-- ARGV     pairs of requests admitted per window and window length in µs, as for check.lua
--
-- Returns {now_us, then per window: used, remaining, reset_us}: the slots counted in the trailing
-- window, those still free, and the moment one more is free (now when none is used), computed
-- exactly as check.lua would.
local key = KEYS[1]
local now = clock()
local ring = open(key)
local reply = {now}
for i = 1, #ARGV, 2 do
  local limit, window = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local count = used(ring, window, now)
  reply[#reply + 1] = count
  reply[#reply + 1] = math.max(0, limit - count)
  reply[#reply + 1] = next_free(ring, limit, window, count, now)
end
return reply
