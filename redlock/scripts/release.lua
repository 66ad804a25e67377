-- Delete the lock only if it still holds our token.
--
-- KEYS[1] lock key  ARGV[1] token  ARGV[2] channel to announce the release on ("" for none)
--
-- Returns 1 when the key was ours and is gone, 0 otherwise.
if redis.call('GET', KEYS[1]) == ARGV[1] then
	redis.call('DEL', KEYS[1])
	if ARGV[2] ~= '' then
		redis.call('PUBLISH', ARGV[2], '')
	end
	return 1
end
return 0
