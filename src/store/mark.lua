-- The plan assignments' version mark, shared by the scripts that change the hash KEYS[1]:
-- replicas poll the mark (the '#version' field) and read the whole hash only after it moved. The
-- mark is a counter and the server's time, so a failover to a replica that had not seen the last
-- changes, or a Redis that lost the hash, cannot hand out a mark a tollgate replica already holds
-- for other contents.
local VERSION = '#version'

-- Moves the mark of `key` and returns it.
local function next_mark(key)
  local previous = redis.call('HGET', key, VERSION)
  local count = tonumber(previous and string.match(previous, '^(%d+)') or '0') + 1
  local time = redis.call('TIME')
  local mark = count .. '-' .. time[1] .. time[2]
  redis.call('HSET', key, VERSION, mark)
  return mark
end

