-- When a window of `limit` has room for a request of `cost` (now when it has it already): when
-- the time that blocks it leaves the window.
local function room_at(ring, limit, window, cost, now)
  local blocking = recent(ring, limit - cost)
  if blocking and blocking + window > now then
    return blocking + window
  end
  return now
end

-- One check of a bucket against all its windows, atomically (appended to ring.lua): the body of
-- check.lua, and of the quota endpoint's count of its own requests in quota.lua.
--
-- `limits` and `windows` hold each window's requests and length in µs, shortest window first;
-- `capacity` is how many admission times the bucket keeps (every rule of the bucket's route
-- counted) and `retain` how long in ms it keeps one (the longest window of those rules, rounded
-- up), as the text of the script's argument.
-- Appends per window: remaining, reset_us to `reply`, and returns allowed (1|0). After a counted
-- request, reset is when the window frees one more slot; after a denied one, when the window has
-- room for this request (now if it has room already). A denied request is not counted (with
-- `record_denied`, shadow mode, it is), so it consumes no quota in any window.
local function admit(key, cost, record_denied, capacity, retain, limits, windows, now, reply)
  local ring = open(key)

  -- The ring only ever grows: the capacity covers every plan's rule for the route, and a reload
  -- that lowers it must not drop times. A larger one (a reload that raised it) lays the times out
  -- again, oldest first, from one read of the whole string. A new bucket's string is written
  -- whole by its first counted request, and not at all before.
  local new = #ring.data == 0
  if new then
    ring.cap = capacity
  elseif ring.cap < capacity then
    local whole = ring.len > 0 and redis.call('GET', key) or ''
    local slots = {}
    for k = ring.len - 1, 0, -1 do
      local offset = HEADER + ((ring.next - 1 - k) % ring.cap) * 8
      slots[#slots + 1] = string.sub(whole, offset + 1, offset + 8)
    end
    local len = ring.len
    replace(ring, struct.pack('>I4I4I4', capacity, len, len % capacity) .. table.concat(slots), retain)
    ring.cap, ring.next = capacity, len % capacity
  end

  local allowed = 1
  for i = 1, #limits do
    if room_at(ring, limits[i], windows[i], cost, now) > now then
      allowed = 0
      break
    end
  end

  local counted = allowed == 1 or record_denied
  if counted then
    -- Never before the newest time, so the ring stays in order if the server's clock steps back.
    local at = math.max(now, recent(ring, 0) or now)
    if new then
      create(ring, at, cost, retain)
    else
      push(ring, at, cost)
      -- Lengthened only: a reload that shortened the windows never cuts the life of times
      -- counted before it.
      prolong(ring, retain)
    end
  end

  -- Counted up to the limit: past it the reply is the same (no slot free, the limit-th newest
  -- time frees the next), and a counted request left at most `limit` times in the window.
  for i = 1, #limits do
    local count = used(ring, windows[i], now, limits[i])
    reply[#reply + 1] = math.max(0, limits[i] - count)
    if counted then
      reply[#reply + 1] = next_free(ring, limits[i], windows[i], count, now)
    else
      reply[#reply + 1] = room_at(ring, limits[i], windows[i], cost, now)
    end
  end
  return allowed
end
