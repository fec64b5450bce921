-- Settles earlier charges and gives a concurrency slot back, atomically.
--
-- KEYS[i], i <= n   bucket of adjustment i (see check.lua)
-- KEYS[n+1]         optional: the slots holding the lease to release
-- ARGV[1]           now (see common.lua; unused but for the shared head)
-- ARGV[2]           n, the number of adjustments
-- ARGV[3..]         per adjustment i, four values: period (ms), fixed-window
--                   offset (ms; -1 sliding), the start of the window charged
--                   (ms), and the signed change (negative gives back)
-- ARGV[3+4n]        with a release: the lease id
--
-- The change lands in whichever stored window took the charge (Window::adjust
-- in window.rs); a charge whose window rolled out changes nothing, counts
-- never go below zero, and the key's TTL is left as it is.
--
-- Returns {now, adjusted, released}.

-- A stored count that is not an integer in 0..2^53 (another program wrote
-- the key) is left alone. `x % 1` rather than math.floor: an operator, not a
-- call (the same test for a non-negative number).
local function whole(x)
  return x ~= nil and x >= 0 and x <= 9007199254740991 and x % 1 == 0
end

local n = tonumber(ARGV[2])
local adjusted = 0
for i = 1, n do
  local base = 3 + 4 * (i - 1)
  local period = tonumber(ARGV[base])
  local offset = tonumber(ARGV[base + 1])
  local charged = tonumber(ARGV[base + 2])
  local delta = tonumber(ARGV[base + 3])
  local f = redis.call('HMGET', KEYS[i], 's', 'c', 'p')
  local s, c, p = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
  if whole(s) and whole(c) and whole(p) then
    if s == charged then
      redis.call('HSET', KEYS[i], 'c', string.format('%.0f', math.max(0, c + delta)))
      adjusted = adjusted + 1
    elseif offset < 0 and s == charged + period then
      redis.call('HSET', KEYS[i], 'p', string.format('%.0f', math.max(0, p + delta)))
      adjusted = adjusted + 1
    end
  end
end

local released = 0
local lease_key = KEYS[n + 1]
if lease_key then
  released = redis.call('ZREM', lease_key, ARGV[3 + 4 * n])
end
return {now, adjusted, released}
