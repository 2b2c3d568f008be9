-- One check of a bucket against all its windows, atomically (appended to ring.lua).
--
-- KEYS[1]  the bucket's ring
-- ARGV[1]  cost: slots one request takes in every window
-- ARGV[2]  1 to count the request even when a window is full (shadow mode), else 0
-- ARGV[3..] pairs of requests admitted per window and window length in µs, shortest window first
--
-- Returns {allowed (1|0), now_us, then per window: remaining, reset_us}. After a counted request,
-- reset is when the window frees one more slot; after a denied one, when the window has room for
-- this request (now if it has room already). A denied request is not counted (in shadow mode it
-- is), so it consumes no quota in any window.
local key = KEYS[1]
local cost = tonumber(ARGV[1])
local record_denied = ARGV[2] == '1'
local limits, windows = {}, {}
local capacity, longest = 0, 0
for i = 3, #ARGV, 2 do
  local limit, window = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  limits[#limits + 1], windows[#windows + 1] = limit, window
  capacity, longest = math.max(capacity, limit), math.max(longest, window)
end

local now = clock()
local ring = open(key)

-- A changed configuration changes the capacity: keep the newest times that still fit.
local rewritten = false
if ring.cap ~= capacity then
  local keep = math.min(ring.len, capacity)
  local slots = {}
  for k = keep - 1, 0, -1 do
    slots[#slots + 1] = struct.pack('>d', recent(ring, k))
  end
  replace(ring, struct.pack('>I4I4I4', capacity, keep, keep % capacity) .. table.concat(slots))
  ring.cap, ring.len, ring.next = capacity, keep, keep % capacity
  rewritten = true
end

local allowed = 1
local room_at = {}
for i = 1, #limits do
  local blocking = recent(ring, limits[i] - cost)
  if blocking and blocking + windows[i] > now then
    allowed = 0
    room_at[i] = blocking + windows[i]
  else
    room_at[i] = now
  end
end

local counted = allowed == 1 or record_denied
if counted then
  -- Never before the newest time, so the ring stays in order if the server's clock steps back.
  local at = math.max(now, recent(ring, 0) or now)
  local slot = struct.pack('>d', at)
  local first = math.min(cost, ring.cap - ring.next)
  write(ring, HEADER + ring.next * 8, string.rep(slot, first))
  if cost > first then
    write(ring, HEADER, string.rep(slot, cost - first))
  end
  ring.next = (ring.next + cost) % ring.cap
  ring.len = math.min(ring.len + cost, ring.cap)
  write(ring, 0, struct.pack('>I4I4I4', ring.cap, ring.len, ring.next))
end
if counted or rewritten then
  redis.call('PEXPIRE', key, math.ceil(longest / 1000))
end

local reply = {allowed, now}
for i = 1, #limits do
  local count = used(ring, windows[i], now)
  reply[#reply + 1] = math.max(0, limits[i] - count)
  if counted then
    reply[#reply + 1] = next_free(ring, limits[i], windows[i], count, now)
  else
    reply[#reply + 1] = room_at[i]
  end
end
return reply
