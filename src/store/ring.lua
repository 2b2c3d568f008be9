-- A bucket's admission log as a ring of times in one Redis string: exact sliding windows in about
-- 8 bytes per counted request, however long the windows are.
--
-- Layout:
--   bytes 0..11   capacity, length (times held, at most capacity) and next (the slot written
--                 next), each a big-endian u32
--   bytes 12..    capacity slots of 8 bytes, each an admission time in Unix µs as a big-endian
--                 double (exact below 2^53 µs, the year 2255)
-- Times are written in order, so the k-th most recent (k = 0: the newest) is in slot
-- (next - 1 - k) mod capacity, and a window of N requests needs only the last N times: it admits a
-- request of cost c iff the (N - c)-th most recent time has left it. The string grows as slots are
-- first written, so a bucket that is never full never takes its whole capacity.
--
-- The first PREFIX bytes are read with one command when the ring is opened, and writes are
-- mirrored into that copy: a ring of up to 1 022 slots is then searched without another read,
-- and a larger one reads only the slots beyond the copy, one GETRANGE each.
--
-- Time comes from the Redis server, so tollgate replicas with skewed clocks agree. A request
-- admitted at t is counted while now < t + window.
local HEADER = 12
local PREFIX = 8192

local function clock()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000000 + tonumber(time[2])
end

-- `data` is an exact copy of the string's first bytes; `whole` when it is the entire string.
local function open(key)
  local data = redis.call('GETRANGE', key, 0, PREFIX - 1)
  local ring = {key = key, data = data, whole = #data < PREFIX, cap = 0, len = 0, next = 0}
  if #data >= HEADER then
    ring.cap, ring.len, ring.next = struct.unpack('>I4I4I4', data)
  end
  return ring
end

-- `length` bytes at `offset`, from the copy when it holds them.
local function read(ring, offset, length)
  if offset + length <= #ring.data then
    return string.sub(ring.data, offset + 1, offset + length)
  end
  return redis.call('GETRANGE', ring.key, offset, offset + length - 1)
end

-- Writes `bytes` at `offset` (Redis pads a gap with zero bytes), and into the copy, which stays
-- an exact prefix of the string of at most PREFIX bytes.
local function write(ring, offset, bytes)
  redis.call('SETRANGE', ring.key, offset, bytes)
  local data = ring.data
  if offset >= #data and not ring.whole then
    return
  end
  if #data < offset then
    data = data .. string.rep('\0', offset - #data)
  end
  data = string.sub(data, 1, offset) .. bytes .. string.sub(data, offset + #bytes + 1)
  if #data >= PREFIX then
    data = string.sub(data, 1, PREFIX)
    ring.whole = false
  end
  ring.data = data
end

-- Replaces the whole string.
local function replace(ring, value)
  redis.call('SET', ring.key, value)
  ring.data = string.sub(value, 1, PREFIX)
  ring.whole = #value < PREFIX
end

-- The k-th most recent admission time, or nil when the ring holds fewer.
local function recent(ring, k)
  if k < 0 or k >= ring.len then
    return nil
  end
  local offset = HEADER + ((ring.next - 1 - k) % ring.cap) * 8
  return (struct.unpack('>d', read(ring, offset, 8)))
end

-- How many held times lie in the trailing window: a binary search, since they are in order.
local function used(ring, window, now)
  local low, high = 0, ring.len
  while low < high do
    local mid = math.floor((low + high) / 2)
    if recent(ring, mid) + window > now then
      low = mid + 1
    else
      high = mid
    end
  end
  return low
end

-- When a window of `limit` with `count` times in it frees one more slot: the oldest counted time
-- leaves it (after a lowered limit, the one whose departure brings the count below the limit);
-- now when nothing is counted.
local function next_free(ring, limit, window, count, now)
  if count == 0 then
    return now
  end
  return recent(ring, math.min(count, limit) - 1) + window
end
