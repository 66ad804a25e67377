-- Reset the lock's TTL where the key still holds our token; with repair on,
-- set it again where the key is missing (the node restarted without its
-- data, or missed the acquisition).
--
-- KEYS[1] lock key  ARGV[1] token  ARGV[2] TTL in ms
-- KEYS[2] release   ARGV[3] "1" to repair a missing key
--         tombstone ARGV[4..7] the record's identity, value, fence and
-- KEYS[3] election             sequence number, with KEYS[3]
--         record
--         (optional)
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
--
-- A key missing because its holder released it is not repaired: the release
-- left a tombstone with the token (release.lua) for as long as an
-- extension sent before it may arrive.
--
-- An election's leader record (see leader.lua) expires with the lock: it is
-- extended with it, and written again where it is missing or stale.
local cur = redis.call('GET', KEYS[1])
local got = 0
if cur == ARGV[1] then
	got = redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif not cur and ARGV[3] == '1' and redis.call('GET', KEYS[2]) ~= ARGV[1] then
	redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
	got = 2
end
if got > 0 and #KEYS > 2 then
	if redis.call('HGET', KEYS[3], 'token') ~= ARGV[1] then
		redis.call('HSET', KEYS[3], 'token', ARGV[1], 'id', ARGV[4], 'value', ARGV[5], 'fence', ARGV[6], 'seq', ARGV[7])
	end
	redis.call('PEXPIRE', KEYS[3], ARGV[2])
end
return got
