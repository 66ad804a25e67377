-- Delete the lock only if it still holds our token, announce it, and grant
-- the key to the head of its queue when the head asked for that.
--
-- KEYS[1] lock key    ARGV[1] token
-- KEYS[2] queue       ARGV[2] channel to announce the release on ("" for none)
-- KEYS[3] queue       ARGV[3] "1" to name the queue's head in the announcement
--         entries'            and grant it the key
--         expiry and  ARGV[4] the holder's own waiter id, to take out of the
--         grant tokens        queue ("" for none)
--         (callers without a queue pass the lock key again)
-- KEYS[4] tombstone   ARGV[5] how long to keep it in ms ("0": none; the
--                             callers without one pass the lock key again)
-- KEYS[5] node sentinel key   ARGV[6] restart quarantine in ms (0: no check)
-- KEYS[6] node run id key
--
-- The tombstone records the released token for as long as an extension sent
-- before the release may still arrive: such an extension must not repair
-- the key it finds missing (extend.lua), or a released lock would come back
-- for a TTL with nobody to release it.
--
-- The announcement is "<token> <head> <lock key>": the token, so that the
-- announcements of one release by several nodes wake a waiter once; the
-- waiter id at the head of the queue ("" when there is none), so that only it
-- wakes. When the head registered a grant token (acquire.lua) and this node
-- votes (it is out of its restart quarantine, as acquire.lua would find), the
-- key is set to that token for the head's TTL in the same step, the head
-- leaves the queue here, and the announcement's head is "<id>+<token>": a
-- waiter that hears this from a majority holds the lock without another
-- round. It counts its validity from the start of the attempt that
-- registered the token, which reached this node before this grant.
--
-- Returns 1 when the key was ours and is gone, 0 otherwise.
if redis.replicate_commands then
	redis.replicate_commands() -- Redis < 5: allow writes after TIME
end
-- The holder leaves the queue on every node, also where its key is not:
-- a node that did not grant it the key (or whose grant it did not wait
-- for) still queues it, and a release arriving there late must not grant
-- the key to a holder that is gone.
if ARGV[4] ~= '' then
	redis.call('ZREM', KEYS[2], ARGV[4])
	redis.call('HDEL', KEYS[3], ARGV[4], 'g:' .. ARGV[4])
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
	return 0
end
redis.call('DEL', KEYS[1])
if ARGV[5] ~= '0' then
	redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[5])
end
if ARGV[2] == '' then
	return 1
end

local head = ''
if ARGV[3] == '1' then
	local t = redis.call('TIME')
	local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
	-- The first entry that has not expired; expired ones go at the next vote.
	local first = redis.call('ZRANGE', KEYS[2], 0, 9)
	for _, id in ipairs(first) do
		if tonumber(redis.call('HGET', KEYS[3], id) or '0') > now then
			head = id
			break
		end
	end

	-- Whether this node votes now for a waiter whose quarantine is q: the
	-- restart quarantine as acquire.lua checks it, the longer of the
	-- waiter's and this release's, without recording anything (a node that
	-- must record a new run id or a lost sentinel votes at the next attempt
	-- instead).
	local function votes(q)
		local quarantine = math.max(tonumber(ARGV[6]), tonumber(q) or 0)
		if quarantine == 0 then
			return true
		end
		local born = redis.call('GET', KEYS[5])
		if not born or now - tonumber(born) < quarantine then
			return false
		end
		local ok, info = pcall(redis.call, 'INFO', 'server')
		if not ok then
			local msg = type(info) == 'table' and info.err or tostring(info)
			return not string.find(msg, 'NOPERM', 1, true)
		end
		local runid = string.match(info, 'run_id:(%x+)')
		return not runid or redis.call('GET', KEYS[6]) == runid
	end

	local grant = head ~= '' and redis.call('HGET', KEYS[3], 'g:' .. head)
	if grant then
		local token, ttl, q = string.match(grant, '^(%S+) (%d+) ?(%d*)$')
		if token and votes(q) then
			redis.call('SET', KEYS[1], token, 'PX', ttl)
			redis.call('ZREM', KEYS[2], head)
			redis.call('HDEL', KEYS[3], head, 'g:' .. head)
			head = head .. '+' .. token
		end
	end
end
redis.call('PUBLISH', ARGV[2], ARGV[1] .. ' ' .. head .. ' ' .. KEYS[1])
return 1
