-- Extends a held lease by its TTL from now; a lease that expired (and was
-- swept, or is past its score) is not brought back.
--
-- KEYS[1]  the key's slots (see check.lua)
-- ARGV[1]  now (see common.lua)
-- ARGV[2]  the lease id
-- ARGV[3]  the TTL (ms)
--
-- Returns {now, renewed}.

local score = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2]))
if score == nil or score <= now then
  return {now, 0}
end
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], 'XX', string.format('%.0f', now + ttl), ARGV[2])
redis.call('PEXPIRE', KEYS[1], string.format('%.0f', ttl + 1000))
return {now, 1}
