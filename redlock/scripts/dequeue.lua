-- Take a waiter out of a key's queue: it holds the lock now, handed over by
-- the previous holder of its Client without a round trip, and must not stay
-- ahead of the waiters behind it; or it gave up waiting.
--
-- KEYS[1] queue  KEYS[2] queue entries' expiry and grant tokens  KEYS[3] lock key
-- ARGV[1] waiter id  ARGV[2] channel to announce on ("" for none)
-- ARGV[3] the waiter's grant token, when it gives up ("" for none)
-- ARGV[4] the token of its last attempt, when it gives up ("" for none):
--         registered by the attempt before, it may have been granted too
--         when that attempt never reached the nodes
--
-- A waiter that gives up may have been named the next holder by a release
-- already: the waiters behind it heard that the turn is not theirs, and
-- sleep. A release may even have granted it the key (release.lua), which it
-- now deletes. So when it led the queue, or held the key, and the key is
-- free, its removal is announced like a release, "<waiter id> <new head>
-- <lock key>": the id is the same on every node, so the new head counts a
-- majority of them.
if redis.replicate_commands then
	redis.replicate_commands() -- Redis < 5: allow writes after TIME
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

-- The first entry that has not expired (expired ones go at the next vote).
local function head()
	for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, 9)) do
		if tonumber(redis.call('HGET', KEYS[2], id) or '0') > now then
			return id
		end
	end
	return ''
end

local led = false
if ARGV[2] ~= '' then
	led = head() == ARGV[1]
end
local cur = redis.call('GET', KEYS[3])
if cur and (cur == ARGV[3] or cur == ARGV[4]) and cur ~= '' then
	redis.call('DEL', KEYS[3])
	led = ARGV[2] ~= ''
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1], 'g:' .. ARGV[1])
if led and redis.call('EXISTS', KEYS[3]) == 0 then
	redis.call('PUBLISH', ARGV[2], ARGV[1] .. ' ' .. head() .. ' ' .. KEYS[3])
end
return 1
