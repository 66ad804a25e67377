-- Storage-side fencing check: write a value only when its fence token is not
-- lower than the highest token already seen for the resource.
--
-- KEYS[1] data key  KEYS[2] highest-token key
-- ARGV[1] fence token  ARGV[2] value
--
-- Returns {1, previous highest} when written, {0, highest} when refused.
local seen = tonumber(redis.call('GET', KEYS[2]) or '0')
local token = tonumber(ARGV[1])
if token < seen then
	return {0, seen}
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('SET', KEYS[1], ARGV[2])
return {1, seen}
