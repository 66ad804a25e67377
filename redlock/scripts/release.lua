-- Delete the lock only if it still holds our token, and announce it.
--
-- KEYS[1] lock key  ARGV[1] token
--                   ARGV[2] channel to announce the release on ("" for none);
--                           the message is "<token> <lock key>", so that the
--                           announcements of one release by several nodes
--                           wake a waiter once
--
-- Returns 1 when the key was ours and is gone, 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then
	redis.call('DEL', KEYS[1])
	if ARGV[2] ~= '' then
		redis.call('PUBLISH', ARGV[2], ARGV[1] .. ' ' .. KEYS[1])
	end
	return 1
end
return 0
