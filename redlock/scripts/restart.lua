-- Record a node restart seen from INFO server: when the node's run id
-- differs from the one recorded, its data may be older than its process
-- (loaded from an AOF or RDB file that lacks the last writes), so the
-- sentinel moves to the start of the process and the quarantine runs again.
--
-- KEYS[1] node sentinel key  KEYS[2] run id key
-- ARGV[1] run id             ARGV[2] uptime in ms
--
-- Returns {restarted (0/1), sentinel (node ms), node time (ms)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local born = tonumber(redis.call('GET', KEYS[1]) or '-1')
if redis.call('GET', KEYS[2]) == ARGV[1] and born >= 0 then
	return {0, born, now}
end
redis.call('SET', KEYS[2], ARGV[1])
local started = now - tonumber(ARGV[2])
if born < started then
	redis.call('SET', KEYS[1], started)
	born = started
end
return {1, born, now}
