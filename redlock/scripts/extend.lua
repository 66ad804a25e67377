-- Reset the lock's TTL where the key still holds our token; with repair on,
-- set it again where the key is missing (the node restarted without its
-- data, or missed the acquisition).
--
-- KEYS[1] lock key  ARGV[1] token  ARGV[2] TTL in ms
--                   ARGV[3] "1" to repair a missing key
--
-- Returns 1 when extended, 2 when repaired, 0 when the key holds another
-- token (or is missing and repair is off).
--
-- A repair is sound only while the holder's validity lasts (the caller sends
-- it only then) and the restart quarantine is on: a node that lost its data
-- grants no lock to anyone for a quarantine, so nobody else can hold the
-- key there, and setting the holder's key adds no grant. Without the
-- quarantine the emptied node could have granted another client, and the
-- repair would hide that.
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
	return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if not cur and ARGV[3] == '1' then
	redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
	return 2
end
return 0
