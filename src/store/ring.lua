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
-- The slots are read in blocks of BLOCK slots, one GETRANGE each, the first (with the header)
-- when the ring is opened and any other when a lookup first needs it: a ring of up to BLOCK
-- slots is searched after one read, and a larger one reads only the blocks its lookups touch
-- (those around `next`, where the newest and the oldest times are, unless a window ends deep in
-- the ring). A check writes once, the same time into the `cost` slots that become the newest;
-- the ring remembers that run instead of mending the blocks read.
--
-- What a check costs Redis, measured in instructions (BENCHMARKS.md), is mostly per command (a
-- lookup of the command and of the key, the call's bookkeeping), per number handed to one (Redis
-- prints it with `%.17g`), and per byte read into Lua (every copy is garbage the Lua collector
-- then walks the heap for): blocks of 1 KiB rather than the whole ring, offsets that never change
-- passed as strings (so is a string's life in ms, `life_ms`, as the script's argument gives it),
-- and the header written with the new slots in one SETRANGE when the slots
-- between them are in the first block. Numbers that come as strings (the arguments, TIME's
-- reply) are converted with `+ 0`: one strtod, where tonumber() runs two.
--
-- Time comes from the Redis server, so tollgate replicas with skewed clocks agree. A request
-- admitted at t is counted while now < t + window.
local HEADER = 12
local BLOCK = 127
local FIRST = HEADER + BLOCK * 8 -- bytes of the first block, header included
local FIRST_LAST = '1027' -- its last byte (FIRST - 1), as a command's argument

local function clock()
  local time = redis.call('TIME')
  return time[1] * 1000000 + time[2]
end

-- `data` is the first block as opened (or as replaced), header included; `blocks` the others
-- read so far, by number (nil until one is: most rings fit in the first).
local function open(key)
  local data = redis.call('GETRANGE', key, '0', FIRST_LAST)
  local ring = {key = key, data = data, cap = 0, len = 0, next = 0, fresh = 0}
  if #data >= HEADER then
    ring.cap, ring.len, ring.next = struct.unpack('>I4I4I4', data)
  end
  return ring
end

-- Replaces the whole string, which then lives at least `life_ms` (or keeps its longer life).
local function replace(ring, value, life_ms)
  local ttl = redis.call('PTTL', ring.key)
  redis.call('SET', ring.key, value, 'PX', math.max(ttl, life_ms + 0))
  ring.data, ring.blocks = string.sub(value, 1, FIRST), nil
  ring.fresh = 0
end

-- Writes the ring of a bucket that has no string yet, holding `cost` admissions at time `at`, to
-- live `life_ms`: two commands for what `replace`, `push` and `prolong` would take five. The
-- header is written first, on its own, so that the string then grows as every ring's does (Redis
-- doubles a string's room as SETRANGE lengthens it, from the size it first had).
local function create(ring, at, cost, life_ms)
  local len = math.min(cost, ring.cap)
  local header = struct.pack('>I4I4I4', ring.cap, len, len % ring.cap)
  local slots = string.rep(struct.pack('>d', at), len)
  redis.call('SET', ring.key, header, 'PX', life_ms)
  redis.call('SETRANGE', ring.key, HEADER, slots)
  ring.data = string.sub(header .. slots, 1, FIRST)
  ring.len, ring.next = len, len % ring.cap
  ring.fresh, ring.fresh_at = len, at
end

-- Makes the string live at least `life_ms` from now, never shorter than it would already:
-- `PEXPIRE … GT`, one command, on Redis 7.0 and later (Valkey included). Redis 6.2 has no GT and
-- answers it with an error, which `pcall` turns into a value: there the same is done by hand, with
-- PTTL first. As with GT, a string without an expiry (PTTL -1; only ever one made by hand) keeps
-- none.
local function prolong(ring, life_ms)
  local set = redis.pcall('PEXPIRE', ring.key, life_ms, 'GT')
  if type(set) == 'table' and set.err then
    local ttl = redis.call('PTTL', ring.key)
    if ttl >= 0 and ttl < life_ms + 0 then
      redis.call('PEXPIRE', ring.key, life_ms)
    end
  end
end

-- Counts `cost` more admissions at time `at`: they become the newest `cost` times. When they do
-- not wrap around and the slots before them are in the first block as read (nothing was written
-- since), the header, those slots and the new ones are one SETRANGE.
local function push(ring, at, cost)
  local slot = struct.pack('>d', at)
  local first = math.min(cost, ring.cap - ring.next)
  local offset = HEADER + ring.next * 8
  local header = struct.pack('>I4I4I4', ring.cap, math.min(ring.len + cost, ring.cap),
    (ring.next + cost) % ring.cap)
  if first == cost and #ring.data >= offset then
    redis.call('SETRANGE', ring.key, '0',
      header .. string.sub(ring.data, HEADER + 1, offset) .. string.rep(slot, cost))
  else
    redis.call('SETRANGE', ring.key, offset, string.rep(slot, first))
    if cost > first then
      redis.call('SETRANGE', ring.key, HEADER, string.rep(slot, cost - first))
    end
    redis.call('SETRANGE', ring.key, '0', header)
  end
  ring.next = (ring.next + cost) % ring.cap
  ring.len = math.min(ring.len + cost, ring.cap)
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
  local slot = (ring.next - 1 - k) % ring.cap
  local number = math.floor(slot / BLOCK)
  local block, at = ring.data, HEADER + slot * 8
  if number > 0 then
    local blocks = ring.blocks
    block = blocks and blocks[number]
    if not block then
      local first = HEADER + number * BLOCK * 8
      block = redis.call('GETRANGE', ring.key, first, first + BLOCK * 8 - 1)
      if not blocks then
        blocks = {}
        ring.blocks = blocks
      end
      blocks[number] = block
    end
    at = (slot - number * BLOCK) * 8
  end
  local bytes = string.sub(block, at + 1, at + 8)
  return (struct.unpack('>d', bytes))
end

-- How many held times lie in the trailing window, counting at most `bound` of them (all of them
-- when nil): a binary search, since they are in order, after a first look at the oldest time it
-- may count (when that one is in the window, so are all the newer ones).
local function used(ring, window, now, bound)
  local high = ring.len
  if bound and bound < high then
    high = math.max(bound, 0)
  end
  if high == 0 or recent(ring, high - 1) + window > now then
    return high
  end
  local low = 0
  high = high - 1
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
