-- Shared head of infergate's rate-limit scripts (check.lua, peek.lua).
-- The arithmetic mirrors crates/ratelimit/src/window.rs; src/redis.rs
-- explains the key layout and why the scripts look the way they do.
--
-- ARGV[1] is the current time in Unix milliseconds, or '' to read the
-- server's TIME: then every gateway replica shares one clock.

if redis.replicate_commands then
  -- Servers older than 5.0 replicate scripts verbatim and refuse a write
  -- after TIME unless told to replicate effects; newer ones ignore this.
  pcall(redis.replicate_commands)
end

local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
else
  now = tonumber(ARGV[1])
end

-- The bucket stored at `key` and its counts rolled forward to `now`
-- (View::of in window.rs, View::fresh for a missing key), as nine values:
-- exists, s, c, p (the stored fields as read; a fixed window keeps no previous
-- count, so its p reads 0), then start, elapsed, lag, cur, prev (the rolled
-- view). Values, not a table: each caller keeps only what it needs.
--
-- The window's start and the validity tests are written out here rather than
-- called: a Lua function call costs redis-server ~700 instructions, more than
-- the test it makes, and this runs for every bucket of every check (8.3 k of
-- the ~226 k instructions a three-bucket check cost, make
-- bench-redis-instructions).
local function read(key, period, offset)
  offset = offset or -1
  local fixed = offset >= 0
  local f = redis.call('HMGET', key, 's', 'c', 'p')
  local s, c, p = tonumber(f[1]), tonumber(f[2]), tonumber(f[3])
  -- The start of the window holding `now`: epoch-aligned for a sliding window
  -- (offset < 0), `offset` ms after the epoch-aligned boundaries for a fixed
  -- one (Grid::start in window.rs).
  local start
  if not fixed then
    start = now - now % period
  elseif now < offset then
    start = 0
  else
    start = now - (now - offset) % period
  end
  -- A stored count or start that is not an integer in 0..2^53 (`x % 1`, not a
  -- math.floor call, tests for a whole number),
  -- or a start off the period's grid (Grid::on_grid: another program wrote the
  -- key), makes the bucket read as empty rather than fail every request or
  -- confuse the rolling below; the next allowed request overwrites it.
  if not (s and c and p and s >= 0 and c >= 0 and p >= 0
          and s <= 9007199254740991 and c <= 9007199254740991
          and p <= 9007199254740991
          and s % 1 == 0 and c % 1 == 0 and p % 1 == 0
          and ((not fixed and s % period == 0)
               or (fixed and (s == 0
                              or (s >= offset and (s - offset) % period == 0))))) then
    return 0, 0, 0, 0, start, now - start, 0, 0, 0
  end
  if fixed then
    p = 0
  end
  if start < s then
    -- The clock is behind the stored window: judge at the window's start.
    return 1, s, c, p, s, 0, s - now, c, p
  elseif start == s then
    return 1, s, c, p, start, now - start, 0, c, p
  elseif not fixed and start == s + period then
    return 1, s, c, p, start, now - start, 0, 0, c
  end
  return 1, s, c, p, start, now - start, 0, 0, 0
end
