-- Record a node restart seen from INFO server: when the node's run id
-- differs from the one recorded, the process changed and its data may lack
-- the last writes (an AOF written every second, an RDB, an asynchronously
-- replicated replica), so the quarantine starts again.
--
-- KEYS[1] node sentinel key  KEYS[2] run id key
-- ARGV[1] run id             ARGV[2] uptime in ms (logged by the caller)
--
-- Returns {restarted (0/1), sentinel (node ms), node time (ms)}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local born = tonumber(redis.call('GET', KEYS[1]) or '-1')
if redis.call('GET', KEYS[2]) == ARGV[1] and born >= 0 then
	return {0, born, now}
end
redis.call('SET', KEYS[2], ARGV[1])
-- A new process: a restart (data lost at its start, now − uptime) or a
-- failover to a replica (data lost at some moment the uptime does not tell).
-- Restart the quarantine from now, which covers both.
if born < now then
	redis.call('SET', KEYS[1], now)
	born = now
end
return {1, born, now}
