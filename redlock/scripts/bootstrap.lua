-- Declare a node of a fresh deployment: date its sentinel long ago so that it
-- votes at once, unless the node has been in service (a sentinel older than
-- the quarantine): then the node keeps whatever quarantine it serves.
--
-- KEYS[1] node sentinel key  ARGV[1] "read" or "declare"
-- KEYS[2] node run id key    ARGV[2] restart quarantine in ms
--
-- Returns {state, data age in ms}: state 0 no sentinel, 1 in its quarantine,
-- 2 in service (not touched), 3 declared fresh now.
if redis.replicate_commands then
	redis.replicate_commands()
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local born = redis.call('GET', KEYS[1])
local state, age = 0, 0
if born then
	age = now - tonumber(born)
	state = 1
	if age >= tonumber(ARGV[2]) then
		state = 2
	end
end
if ARGV[1] ~= 'declare' or state == 2 then
	return {state, age}
end
redis.call('SET', KEYS[1], 0)
local ok, info = pcall(redis.call, 'INFO', 'server')
if ok then
	local runid = string.match(info, 'run_id:(%x+)')
	if runid then
		redis.call('SET', KEYS[2], runid)
	end
end
return {3, now}
