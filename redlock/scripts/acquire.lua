-- Acquire one node's vote for a lock, atomically.
--
-- KEYS[1] lock key           ARGV[1] token
-- KEYS[2] fence counter key  ARGV[2] TTL in ms
--         (read only when ARGV[6] is "1"; callers that do not fence pass
--         the lock key again)
-- KEYS[3] node sentinel key  ARGV[3] caller's wall clock in ms
--                            ARGV[4] largest clock skew allowed in ms (0: no check)
--                            ARGV[5] restart quarantine in ms (0: no check)
--                            ARGV[6] "1" to return the fence counter
--
-- Returns {status, value}:
--   { 1, counter}  granted; counter is the node's fence counter (0 unless asked)
--   { 0, pttl}     the key is held by another token for pttl more ms
--   {-1, skew}     refused: node clock − caller clock is skew ms, beyond the bound
--   {-2, left}     refused: the node's data is younger than the quarantine, left ms to go
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local maxskew = tonumber(ARGV[4])
if maxskew > 0 then
	local skew = now - tonumber(ARGV[3])
	if skew > maxskew or -skew > maxskew then
		return {-1, skew}
	end
end

-- The sentinel has no TTL and records when this node's data began. If it is
-- missing, the node lost its data (or never had any): start the clock now.
local born = redis.call('GET', KEYS[3])
if born then
	born = tonumber(born)
else
	redis.call('SET', KEYS[3], now)
	born = now
end
local quarantine = tonumber(ARGV[5])
if quarantine > 0 and now - born < quarantine then
	return {-2, quarantine - (now - born)}
end

if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
	if ARGV[6] == '1' then
		return {1, tonumber(redis.call('GET', KEYS[2]) or '0')}
	end
	return {1, 0}
end
return {0, redis.call('PTTL', KEYS[1])}
