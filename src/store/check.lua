-- One check of a bucket against all its windows, atomically (appended to ring.lua and
-- admit.lua).
--
-- KEYS[1]  the bucket's ring
-- ARGV[1]  cost: slots one request takes in every window
-- ARGV[2]  1 to count the request even when a window is full (shadow mode), else 0
-- ARGV[3]  capacity: admission times the bucket keeps (every rule of the bucket's route counted)
-- ARGV[4]  retain: how long in ms the bucket keeps a time (the longest window of those rules,
--          rounded up)
-- ARGV[5..] pairs of requests admitted per window and window length in µs, shortest window first
--
-- Returns allowed (1|0), now_us, then per window: remaining, reset_us, as admit() tells, packed
-- in one string of big-endian doubles (exact below 2^53): redis-rs parses one value where an array
-- took a parse of each of its numbers too (BENCHMARKS.md).
local limits, windows = {}, {}
for i = 5, #ARGV, 2 do
  limits[#limits + 1], windows[#windows + 1] = ARGV[i] + 0, ARGV[i + 1] + 0
end
local now = clock()
local reply = {0, now}
reply[1] = admit(KEYS[1], ARGV[1] + 0, ARGV[2] == '1', ARGV[3] + 0,
  ARGV[4], limits, windows, now, reply)
return struct.pack('>' .. string.rep('d', #reply), unpack(reply))
