-- Adds one day's usage of one key, keeps the latest use, drops days past retention.
-- KEYS[1]  the key's usage hash
-- ARGV     last used (Unix ms), date (YYYY-MM-DD), requests, input tokens, output tokens,
--          the first date still kept, the hash's TTL (ms), then the refusals: rate limited,
--          token limited, concurrency limited, forbidden, then the Unix minute of the counts
local key = KEYS[1]
local date = ARGV[2]
redis.call('HINCRBY', key, date .. ':r', ARGV[3])
redis.call('HINCRBY', key, date .. ':i', ARGV[4])
redis.call('HINCRBY', key, date .. ':o', ARGV[5])
local refusal_fields = {':rl', ':tl', ':cl', ':fb'}
for i, suffix in ipairs(refusal_fields) do
  local n = tonumber(ARGV[7 + i]) or 0
  if n > 0 then
    redis.call('HINCRBY', key, date .. suffix, n)
  end
end
local last = tonumber(redis.call('HGET', key, 'last') or '0') or 0
if tonumber(ARGV[1]) > last then
  redis.call('HSET', key, 'last', ARGV[1])
end
local minute = tonumber(ARGV[12])
if minute then
  redis.call('HINCRBY', key, 'm' .. ARGV[12] .. ':r', ARGV[3])
  redis.call('HINCRBY', key, 'm' .. ARGV[12] .. ':i', ARGV[4])
  redis.call('HINCRBY', key, 'm' .. ARGV[12] .. ':o', ARGV[5])
end
for _, field in ipairs(redis.call('HKEYS', key)) do
  if string.sub(field, 1, 1) == 'm' then
    -- A minute older than the one before this delta's can no longer be a current window.
    local m = tonumber(string.match(field, '^m(%d+):'))
    if minute and m and m + 1 < minute then
      redis.call('HDEL', key, field)
    end
  elseif field ~= 'last' and string.sub(field, 1, 10) < ARGV[6] then
    redis.call('HDEL', key, field)
  end
end
redis.call('PEXPIRE', key, ARGV[7])
return 1
