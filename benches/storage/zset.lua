-- The layout the ring replaced, for the storage benchmark only (benches/storage/main.rs): a
-- bucket's admission log as a sorted set, one member per counted request scored by its time in µs
-- (the script of commit d28bef3, src/store/sliding_window.lua), extended to the interface of
-- src/store/check.lua so that both layouts do the same job.
--
-- KEYS[1]  the bucket's log
-- ARGV[1]  cost: members one request adds
-- ARGV[2]  1 to count the request even when a window is full (shadow mode), else 0
-- ARGV[3]  capacity (unused: a sorted set holds what its longest window counts)
-- ARGV[4]  retain: how long in µs the log keeps a request
-- ARGV[5..] pairs of requests admitted per window and window length in µs, shortest window first
--
-- Returns {allowed (1|0), now_us, then per window: remaining, reset_us}, as check.lua does; reset
-- is read with one ZRANGE per window, like the ring's one lookup per window. A request admitted at
-- t is counted while now < t + window.
local key = KEYS[1]
local cost = tonumber(ARGV[1])
local record_denied = ARGV[2] == '1'
local limits, windows = {}, {}
local longest = 0
for i = 5, #ARGV, 2 do
  local limit, window = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  limits[#limits + 1], windows[#windows + 1] = limit, window
  longest = math.max(longest, window)
end

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

redis.call('ZREMRANGEBYSCORE', key, '-inf', now - longest)
local allowed = 1
local counts = {}
local held = 0
for i = 1, #limits do
  -- Times are whole µs, so this counts those after now - window (a number argument, which Redis
  -- formats exactly, where Lua's concatenation keeps only 14 digits).
  counts[i] = redis.call('ZCOUNT', key, now - windows[i] + 1, '+inf')
  held = math.max(held, counts[i])
  if counts[i] + cost > limits[i] then
    allowed = 0
  end
end

local counted = allowed == 1 or record_denied
if counted then
  -- Unique members: within one microsecond the count grows with every counted slot.
  local members = {}
  for j = 0, cost - 1 do
    members[#members + 1] = now
    members[#members + 1] = time[1] .. '.' .. time[2] .. '.' .. (held + j)
  end
  redis.call('ZADD', key, unpack(members))
  redis.call('PEXPIRE', key, math.ceil(longest / 1000))
end

local reply = {allowed, now}
for i = 1, #limits do
  local count = counts[i]
  -- The k-th newest member frees the slot: after a counted request, the oldest one counted (or
  -- the one whose departure brings the count below a lowered limit); after a denied one, the one
  -- whose departure leaves room for this request.
  local k
  if counted then
    count = count + cost
    k = math.min(count, limits[i])
  else
    k = limits[i] - cost + 1
  end
  local reset = now
  if k >= 1 then
    local member = redis.call('ZRANGE', key, -k, -k, 'WITHSCORES')
    if member[2] and (counted or tonumber(member[2]) + windows[i] > now) then
      reset = tonumber(member[2]) + windows[i]
    end
  end
  reply[#reply + 1] = math.max(0, limits[i] - count)
  reply[#reply + 1] = reset
end
return reply
