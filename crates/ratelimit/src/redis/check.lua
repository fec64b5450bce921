-- Checks every bucket and charges each its cost only if all admit (and the
-- concurrency slot, when one is asked for, is free).
--
-- KEYS[i], i <= n         bucket of check i: a hash {s = window start (ms),
--                         c = count in that window, p = count in the one before}
-- KEYS[n+1]               with a lease: the key's slots, a sorted set of lease
--                         ids scored by expiry (ms)
-- ARGV[1]                 now (see common.lua)
-- ARGV[2]                 TTL jitter in ms
-- ARGV[3]                 how many of the first checks are guards, which must
--                         admit like the others but are never charged (a peek
--                         folded into the same round trip)
-- ARGV[4]                 n, the number of checks
-- ARGV[5..]               per check i, five values: period (ms), limit
--                         (clamped to 2^53-1 by the caller), cost, the
--                         fixed-window offset (ms; -1 for a sliding window),
--                         and 1 for a shadow limit (counted, never refusing)
-- ARGV[5+5n..8+5n]        with a lease: cap, lease id, lease TTL (ms), and 1
--                         for a shadow cap
--
-- Returns {allowed, now, in_flight, then per check: exists, s, c, p, admits}:
-- each bucket as stored once this call is done, so the caller derives every
-- reported number with the same code as the memory backend, and whether it
-- admitted (a shadow limit's verdict); in_flight is the slots held afterwards
-- (-1 without a lease). The integers come as one bulk string, separated by
-- spaces, not as an array: a client parses a string in one step and an array
-- element by element, and this script runs on every limited request
-- (docs/performance.md).
--
-- Lua numbers are doubles: integers are exact below 2^53, which covers
-- times, periods (<= 1 year), counts and clamped limits, but not their
-- products (up to 2^88). Products are therefore compared in base-2^24 limbs.

local LIMB = 16777216

local function limbs(x)
  local out = {}
  for i = 1, 3 do
    local r = x % LIMB
    out[i] = r
    x = (x - r) / LIMB
  end
  return out
end

-- a * b as six base-2^24 limbs, least significant first. Each partial
-- product is below 2^48 and each column sums at most three, so every
-- intermediate stays exact.
local function product(a, b)
  local x, y = limbs(a), limbs(b)
  local r = {0, 0, 0, 0, 0, 0}
  for i = 1, 3 do
    for j = 1, 3 do
      r[i + j - 1] = r[i + j - 1] + x[i] * y[j]
    end
  end
  local carry = 0
  for k = 1, 6 do
    local v = r[k] + carry
    r[k] = v % LIMB
    carry = (v - r[k]) / LIMB
  end
  return r
end

-- a * b <= c * d, exactly.
local function product_le(a, b, c, d)
  local x, y = product(a, b), product(c, d)
  for k = 6, 1, -1 do
    if x[k] ~= y[k] then
      return x[k] < y[k]
    end
  end
  return true
end

-- window.rs allows iff remaining(limit) >= cost, that is
--   prev * (period - elapsed) + (cur + cost) * period <= limit * period,
-- rearranged so that no term goes negative.
local function admits(cur, prev, elapsed, period, limit, cost)
  if cur + cost > limit then
    return false
  end
  local slack = limit - cur - cost
  if prev <= slack then
    -- prev * (period - elapsed) <= prev * period <= slack * period
    return true
  end
  return product_le(prev, period - elapsed, slack, period)
end

-- Integers go out as string.format('%d', x): exact below 2^53, as '%.0f'
-- would be, without formatting a double; written out at each use rather than
-- wrapped in a function (a Lua call costs redis-server ~700 instructions).

local jitter = tonumber(ARGV[2])
local guards = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local views = {}
local allowed = true
for i = 1, n do
  local base = 5 * i
  local period = tonumber(ARGV[base])
  local limit = tonumber(ARGV[base + 1])
  -- The usual cost (1) and offset (-1: sliding) are told apart as strings:
  -- tonumber is strtod, ~1,700 instructions a call in redis-server.
  local cost = ARGV[base + 2] == '1' and 1 or tonumber(ARGV[base + 2])
  local offset = ARGV[base + 3] == '-1' and -1 or tonumber(ARGV[base + 3])
  local exists, s, c, p, start, elapsed, lag, cur, prev =
    read(KEYS[i], period, offset)
  local ok = admits(cur, prev, elapsed, period, limit, cost)
  if not (ok or ARGV[base + 4] == '1') then
    allowed = false
  end
  -- exists, s, c, p: the bucket as stored once this call is done; start, lag,
  -- cur, prev: the view `read` rolled.
  views[i] = {exists = exists, s = s, c = c, p = p, start = start, lag = lag,
              cur = cur, prev = prev, period = period, cost = cost, admits = ok}
end

local in_flight = -1
local lease_key = KEYS[n + 1]
if lease_key then
  local base = 5 + 5 * n
  local cap = tonumber(ARGV[base])
  local shadow = ARGV[base + 3] == '1'
  -- Expired leases (their replica died, or stopped renewing) free their slots.
  redis.call('ZREMRANGEBYSCORE', lease_key, '-inf', string.format('%d', now))
  in_flight = redis.call('ZCARD', lease_key)
  if in_flight >= cap and not shadow then
    allowed = false
  elseif allowed then
    local ttl = tonumber(ARGV[base + 2])
    redis.call('ZADD', lease_key, string.format('%d', now + ttl), ARGV[base + 1])
    redis.call('PEXPIRE', lease_key, string.format('%d', ttl + jitter))
    in_flight = in_flight + 1
  end
end

if allowed then
  -- A bucket named by several checks is charged once, as in memory.rs.
  local charged = {}
  for i = guards + 1, n do
    local key = KEYS[i]
    local v = views[i]
    local first = charged[key]
    if first then
      v.exists, v.s, v.c, v.p = 1, first.s, first.c, first.p
    else
      local c = v.cur + v.cost
      if v.exists == 1 and v.s == v.start and v.p == v.prev then
        -- The window it holds: only the count changes (HSET leaves the TTL).
        redis.call('HSET', key, 'c', string.format('%d', c))
      else
        redis.call('HSET', key, 's', string.format('%d', v.start),
                   'c', string.format('%d', c), 'p', string.format('%d', v.prev))
        if v.exists == 0 or v.s ~= v.start then
          -- A new bucket, or one whose window moved on, gets its TTL: two
          -- periods from the window's first write is how long its counts can
          -- matter (window.rs is_expired); the lag keeps that true when the
          -- clock reads behind the window.
          redis.call('PEXPIRE', key,
                     string.format('%d', 2 * v.period + v.lag + jitter))
        end
      end
      v.exists, v.s, v.c, v.p = 1, v.start, c, v.prev
      charged[key] = v
    end
  end
end

local out = {allowed and 1 or 0, now, in_flight}
for i = 1, n do
  local v = views[i]
  out[#out + 1] = v.exists
  out[#out + 1] = v.s
  out[#out + 1] = v.c
  out[#out + 1] = v.p
  out[#out + 1] = v.admits and 1 or 0
end
-- One string.format for the whole reply: '%d' truncates as Redis's own
-- conversion of a Lua number in an array does, and one call costs the server
-- less than a call (or table.concat's '%.14g') per element.
return string.format(string.rep('%d ', #out - 1) .. '%d', unpack(out))
