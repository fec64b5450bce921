-- Reads one bucket without writing anything.
--
-- KEYS[1]  the bucket (see check.lua)
-- ARGV[1]  now (see common.lua)
-- ARGV[2]  its period in ms
-- ARGV[3]  optional: its fixed-window offset in ms (-1 or absent: sliding)
--
-- Returns {now, exists, s, c, p}.

local exists, s, c, p = read(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]) or -1)
return {now, exists, s, c, p}
