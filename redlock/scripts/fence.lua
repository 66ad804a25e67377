-- Raise the node's fence counter to at least ARGV[1] (second round of a
-- fenced acquisition).
--
-- KEYS[1] fence counter key  ARGV[1] fence token
--
-- Returns the counter after the call: equal to ARGV[1] when our token is now
-- the highest, larger when a later holder already wrote a higher one.
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local token = tonumber(ARGV[1])
if token > cur then
	redis.call('SET', KEYS[1], ARGV[1])
	return token
end
return cur
