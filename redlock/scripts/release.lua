-- Delete the lock only if it still holds our token, and announce it.
--
-- KEYS[1] lock key    ARGV[1] token
-- KEYS[2] queue       ARGV[2] channel to announce the release on ("" for none)
-- KEYS[3] queue       ARGV[3] "1" to name the queue's head in the announcement
--         entries'  ARGV[4] the holder's own waiter id, to take out of the
--         expiry            queue ("" for none)
--         (callers without a queue pass the lock key again)
-- KEYS[4] tombstone ARGV[5] how long to keep it in ms ("0": none; the
--                           callers without one pass the lock key again)
--
-- The tombstone records the released token for as long as an extension sent
-- before the release may still arrive: such an extension must not repair
-- the key it finds missing (extend.lua), or a released lock would come back
-- for a TTL with nobody to release it.
--
-- The announcement is "<token> <head> <lock key>": the token, so that the
-- announcements of one release by several nodes wake a waiter once; the
-- waiter id at the head of the queue ("" when there is none), so that only it
-- wakes.
--
-- Returns 1 when the key was ours and is gone, 0 otherwise.
if redis.replicate_commands then
	redis.replicate_commands() -- Redis < 5: allow PUBLISH after TIME
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
	return 0
end
redis.call('DEL', KEYS[1])
if ARGV[5] ~= '0' then
	redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[5])
end
if ARGV[4] ~= '' then
	redis.call('ZREM', KEYS[2], ARGV[4])
	redis.call('HDEL', KEYS[3], ARGV[4])
end
if ARGV[2] ~= '' then
	local head = ''
	if ARGV[3] == '1' then
		local t = redis.call('TIME')
		local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
		-- The first entry that has not expired; expired ones go at the
		-- next vote.
		local first = redis.call('ZRANGE', KEYS[2], 0, 9)
		for _, id in ipairs(first) do
			if tonumber(redis.call('HGET', KEYS[3], id) or '0') > now then
				head = id
				break
			end
		end
	end
	redis.call('PUBLISH', ARGV[2], ARGV[1] .. ' ' .. head .. ' ' .. KEYS[1])
end
return 1
