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
-- The first PREFIX bytes are read with one command when the ring is opened: a ring of up to
-- 1 022 slots is then searched without another read, and a larger one reads only the slots
-- beyond that copy, one GETRANGE each. A check writes once, the same time into the `cost` slots
-- that become the newest; the ring remembers that run instead of mending the copy.
--
-- Time comes from the Redis server, so tollgate replicas with skewed clocks agree. A request
-- admitted at t is counted while now < t + window.
local HEADER = 12
local PREFIX = 8192

local function clock()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000000 + tonumber(time[2])
end

-- `data` is a copy of the string's first bytes as opened (or as replaced).
local function open(key)
  local data = redis.call('GETRANGE', key, 0, PREFIX - 1)
  local ring = {key = key, data = data, cap = 0, len = 0, next = 0, fresh = 0}
  if #data >= HEADER then
    ring.cap, ring.len, ring.next = struct.unpack('>I4I4I4', data)
  end
  return ring
end

-- Replaces the whole string, which then lives at least `window_us` (or keeps its longer life).
local function replace(ring, value, window_us)
  local ttl = redis.call('PTTL', ring.key)
  redis.call('SET', ring.key, value, 'PX', math.max(ttl, math.ceil(window_us / 1000)))
  ring.data = string.sub(value, 1, PREFIX)
  ring.fresh = 0
end

-- Makes the string live at least `window_us` from now, never shorter than it would already:
-- `PEXPIRE … GT`, one command, on Redis 7.0 and later (Valkey included). Redis 6.2 has no GT and
-- answers it with an error, which `pcall` turns into a value: there the same is done by hand, with
-- PTTL first. As with GT, a string without an expiry (PTTL -1; only ever one made by hand) keeps
-- none.
local function prolong(ring, window_us)
  local wanted = math.ceil(window_us / 1000)
  local set = redis.pcall('PEXPIRE', ring.key, wanted, 'GT')
  if type(set) == 'table' and set.err then
    local ttl = redis.call('PTTL', ring.key)
    if ttl >= 0 and ttl < wanted then
      redis.call('PEXPIRE', ring.key, wanted)
    end
  end
end

-- Counts `cost` more admissions at time `at`: they become the newest `cost` times.
local function push(ring, at, cost)
  local slot = struct.pack('>d', at)
  local first = math.min(cost, ring.cap - ring.next)
  redis.call('SETRANGE', ring.key, HEADER + ring.next * 8, string.rep(slot, first))
  if cost > first then
    redis.call('SETRANGE', ring.key, HEADER, string.rep(slot, cost - first))
  end
  ring.next = (ring.next + cost) % ring.cap
  ring.len = math.min(ring.len + cost, ring.cap)
  redis.call('SETRANGE', ring.key, 0, struct.pack('>I4I4I4', ring.cap, ring.len, ring.next))
  ring.fresh, ring.fresh_at = math.min(cost, ring.cap), at
end

-- The k-th most recent admission time, or nil when the ring holds fewer.
local function recent(ring, k)
  if k < 0 or k >= ring.len then
    return nil
  end
  if k < ring.fresh then
    return ring.fresh_at
  end
  local offset = HEADER + ((ring.next - 1 - k) % ring.cap) * 8
  local bytes
  if offset + 8 <= #ring.data then
    bytes = string.sub(ring.data, offset + 1, offset + 8)
  else
    bytes = redis.call('GETRANGE', ring.key, offset, offset + 7)
  end
  return (struct.unpack('>d', bytes))
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

-- Appends one window's state to `reply` without counting anything: the slots counted in the
-- trailing window, those still free and the moment one more is free (now when none is used).
local function usage(ring, limit, window, now, reply)
  local count = used(ring, window, now)
  reply[#reply + 1] = count
  reply[#reply + 1] = math.max(0, limit - count)
  reply[#reply + 1] = next_free(ring, limit, window, count, now)
end
