-- The quota endpoint's answer for one API key, in one call (appended to ring.lua and admit.lua):
-- its own request counted in its own bucket, then, when that admits it, every bucket of the key's
-- table read without counting. Every key shares the API key's hash tag, so one cluster slot.
--
-- KEYS[1]   the endpoint's own ring
-- KEYS[2..] the rings of the key's buckets
-- ARGV[1..4] the endpoint's limit: capacity, retain in ms (rounded up), requests, window in µs
--            (cost 1)
-- ARGV[5..] for each of KEYS[2..]: its number of windows n, then n pairs of requests and window
--           length in µs
--
-- Returns {allowed (1|0), now_us, own remaining, own reset_us, then when allowed, per bucket and
-- window: used, remaining, reset_us, as peek.lua reads them}.
local now = clock()
local reply = {0, now}
reply[1] = admit(KEYS[1], 1, false, ARGV[1] + 0, ARGV[2],
  {ARGV[3] + 0}, {ARGV[4] + 0}, now, reply)
if reply[1] == 1 then
  local arg = 5
  for k = 2, #KEYS do
    local ring = open(KEYS[k])
    local windows = ARGV[arg] + 0
    for i = arg + 1, arg + 2 * windows, 2 do
      usage(ring, ARGV[i] + 0, ARGV[i + 1] + 0, now, reply)
    end
    arg = arg + 1 + 2 * windows
  end
end
return reply
