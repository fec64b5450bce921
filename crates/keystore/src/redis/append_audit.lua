-- Append once. KEYS: audit list, op token. ARGV: JSON, token TTL.
-- Returns 1 when appended, 0 when this call's token shows it was appended already.
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 1
