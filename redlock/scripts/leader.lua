-- Write the election's leader record next to the lock, where the lock still
-- holds our token, and announce it.
--
-- KEYS[1] lock key     ARGV[1] token     ARGV[4] fence token
-- KEYS[2] record key   ARGV[2] identity  ARGV[5] sequence number of the write
--                      ARGV[3] value     ARGV[6] channel to announce on ("" for none)
--
-- The record is a hash {token, id, value, fence, seq} that expires with the
-- lock. A write with a lower sequence number than the record's for the same
-- token (an older Proclaim arriving late) changes nothing. The announcement
-- is "<token>:<seq> - <lock key>": the head "-" names no waiter, so that
-- waiters for the lock ignore it and only observers of the election wake.
--
-- Returns 1 when the record is ours now, 0 when the lock does not hold our
-- token.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
	return 0
end
local seq = tonumber(ARGV[5])
if redis.call('HGET', KEYS[2], 'token') == ARGV[1] and tonumber(redis.call('HGET', KEYS[2], 'seq') or '0') > seq then
	return 1
end
redis.call('HSET', KEYS[2], 'token', ARGV[1], 'id', ARGV[2], 'value', ARGV[3], 'fence', ARGV[4], 'seq', ARGV[5])
local ttl = redis.call('PTTL', KEYS[1])
if ttl > 0 then
	redis.call('PEXPIRE', KEYS[2], ttl)
end
if ARGV[6] ~= '' then
	redis.call('PUBLISH', ARGV[6], ARGV[1] .. ':' .. ARGV[5] .. ' - ' .. KEYS[1])
end
return 1
