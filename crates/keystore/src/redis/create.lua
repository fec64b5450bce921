-- Create if absent. KEYS: record, ids, op token. ARGV: JSON, score, id, channel, token TTL.
-- Returns 1 when created, 2 when this very call (same token) created it before its reply was
-- lost, 0 when the id exists.
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('EXISTS', KEYS[3]) == 1 then return 2 end
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('SET', KEYS[3], '1', 'PX', ARGV[5])
redis.call('PUBLISH', ARGV[4], ARGV[3])
return 1
