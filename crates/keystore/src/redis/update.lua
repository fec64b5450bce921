-- Compare and set. KEYS: record. ARGV: the JSON read, the new JSON, channel, id.
-- Returns 1 when written, 0 when the record changed since it was read, -1 when it is gone.
local current = redis.call('GET', KEYS[1])
if not current then return -1 end
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
