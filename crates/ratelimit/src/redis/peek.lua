-- Reads one bucket without writing anything.
--
-- KEYS[1]  the bucket (see check.lua)
-- ARGV[1]  now (see common.lua)
-- ARGV[2]  its period in ms
--
-- Returns {now, exists, s, c, p}.

local v = load(KEYS[1], tonumber(ARGV[2]))
return {now, v.exists, v.s, v.c, v.p}
