-- Adds one day's usage of one key, keeps the latest use, drops days past retention.
-- KEYS[1]  the key's usage hash
-- ARGV     last used (Unix ms), date (YYYY-MM-DD), requests, input tokens, output tokens,
--          the first date still kept, the hash's TTL (ms), then the refusals: rate limited,
--          token limited, concurrency limited, forbidden
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
for _, field in ipairs(redis.call('HKEYS', key)) do
  local day = string.sub(field, 1, 10)
  if field ~= 'last' and day < ARGV[6] then
    redis.call('HDEL', key, field)
  end
end
redis.call('PEXPIRE', key, ARGV[7])
return 1
