-- One node's vote for a lock, atomically: the clock-skew guard, the restart
-- quarantine (data lost, or a new server process behind the address), the
-- waiting queue, then SET NX PX.
--
-- KEYS[1] lock key           ARGV[1] token
-- KEYS[2] fence counter key  ARGV[2] TTL in ms
--         (read only when ARGV[6] is "1"; callers that do not fence pass
--         the lock key again)
-- KEYS[3] node sentinel key  ARGV[3] caller's wall clock in ms
-- KEYS[4] node run id key    ARGV[4] largest clock skew allowed in ms (0: no check)
-- KEYS[5] queue (sorted set) ARGV[5] restart quarantine in ms (0: no check)
-- KEYS[6] queue entries'     ARGV[6] "1" to return the fence counter and the node time
--         expiry (hash;      ARGV[7] how late a request may arrive in ms: a
--         field "g:<id>":            delayed request looks like a clock ahead
--         the entry's grant  ARGV[8] waiter id to register in the queue ("" for none)
--         token)             ARGV[9] the waiter's ticket: its place in the queue,
--         (callers without           the same on every node
--         a queue pass the   ARGV[10] queue entry lifetime in ms, refreshed by each attempt
--         lock key again)    ARGV[11] "1" to grant the key only to the queue's head
--                            ARGV[12] the token a release may set the key to for
--                                    this waiter while it leads the queue ("" for none),
--                                    registered with the TTL and the quarantine
--
-- Returns {status, value, flags[, node time in µs]}:
--   { 1, counter}  granted; counter is the node's fence counter (0 unless asked).
--                  Also when the key already holds the token: a release
--                  set it for this waiter (release.lua), and it now counts
--                  a full TTL from this vote.
--   { 0, pttl}     the key is held by another token for pttl more ms
--   {-1, skew}     refused: node clock − caller clock is skew ms, beyond the bound
--   {-2, left}     refused: the node's data is younger than the quarantine, left ms to go
--   {-3, 0}        refused: the ACL denies INFO, which the quarantine needs
--   {-4, ahead}    refused: other waiters are ahead in the queue (ahead of them,
--                  or the queue's length for a caller not in it)
-- flags: 1 the node does not report a run id (INFO server unsupported),
--        2 a new server process was seen now (its run id changed),
--        4 the node had no sentinel: its data was lost, or it is new.
if redis.replicate_commands then
	redis.replicate_commands() -- Redis < 5: allow writes after TIME and INFO
end
local t = redis.call('TIME')
local sec, usec = tonumber(t[1]), tonumber(t[2])
local now = sec * 1000 + math.floor(usec / 1000)
local fenced = ARGV[6] == '1'

local function reply(status, value, flags)
	if fenced then
		return {status, value, flags, sec * 1000000 + usec}
	end
	return {status, value, flags}
end

local maxskew = tonumber(ARGV[4])
if maxskew > 0 then
	local skew = now - tonumber(ARGV[3])
	if skew > maxskew + tonumber(ARGV[7]) or -skew > maxskew then
		return reply(-1, skew, 0)
	end
end

local flags = 0
local quarantine = tonumber(ARGV[5])
if quarantine > 0 then
	-- The run id names the server process: a restart that kept its data
	-- (an AOF written every second, an RDB, a promoted replica behind the
	-- same address) may still lack the last lock keys.
	local runid
	local ok, info = pcall(redis.call, 'INFO', 'server')
	if ok then
		runid = string.match(info, 'run_id:(%x+)')
	else
		local msg = type(info) == 'table' and info.err or tostring(info)
		if string.find(msg, 'NOPERM', 1, true) then
			return reply(-3, 0, 0)
		end
	end
	if not runid then
		flags = 1
	end
	-- The sentinel has no TTL and records when this node's data began.
	local born = redis.call('GET', KEYS[3])
	if not born then
		born = now
		redis.call('SET', KEYS[3], now)
		if runid then
			redis.call('SET', KEYS[4], runid)
		end
		flags = flags + 4
	else
		born = tonumber(born)
		if runid and redis.call('GET', KEYS[4]) ~= runid then
			redis.call('SET', KEYS[4], runid)
			if born < now then
				born = now
				redis.call('SET', KEYS[3], now)
			end
			flags = flags + 2
		end
	end
	if now - born < quarantine then
		return reply(-2, quarantine - (now - born), flags)
	end
end

local me = ARGV[8]
if ARGV[11] ~= '1' then
	me = ''
end

-- The vote is yes: the waiter leaves the queue here.
local function granted()
	if me ~= '' then
		redis.call('ZREM', KEYS[5], me)
		redis.call('HDEL', KEYS[6], me, 'g:' .. me)
	end
	if fenced then
		return reply(1, tonumber(redis.call('GET', KEYS[2]) or '0'), flags)
	end
	return reply(1, 0, flags)
end

-- Tokens are fresh for every attempt, so the key holds this one only when a
-- release set it for this waiter (the token its previous attempt
-- registered, see release.lua): the vote is this attempt's, and the TTL
-- counts from now. Checked only where the vote would be refused, so that an
-- uncontended attempt costs no read.
local function mine()
	if redis.call('GET', KEYS[1]) == ARGV[1] then
		redis.call('PEXPIRE', KEYS[1], ARGV[2])
		return true
	end
	return false
end

-- The queue: a sorted set of waiter ids by ticket, each entry's expiry, and
-- the token a release may grant it. A waiter that stops refreshing its entry
-- (it died, gave up, or holds the lock) drops out once the entry expires.
-- Only the head may be granted the key; a caller not in the queue only when
-- it is empty.
if ARGV[11] == '1' then
	local life = tonumber(ARGV[10])
	if me ~= '' then
		redis.call('ZADD', KEYS[5], 'NX', ARGV[9], me)
		redis.call('HSET', KEYS[6], me, now + life)
		redis.call('PEXPIRE', KEYS[5], life)
		redis.call('PEXPIRE', KEYS[6], life)
		if ARGV[12] ~= '' then
			redis.call('HSET', KEYS[6], 'g:' .. me, ARGV[12] .. ' ' .. ARGV[2] .. ' ' .. ARGV[5])
		else
			redis.call('HDEL', KEYS[6], 'g:' .. me)
		end
	end
	local head
	while true do
		local first = redis.call('ZRANGE', KEYS[5], 0, 0)
		if #first == 0 then
			break
		end
		if tonumber(redis.call('HGET', KEYS[6], first[1]) or '0') > now then
			head = first[1]
			break
		end
		redis.call('ZREM', KEYS[5], first[1])
		redis.call('HDEL', KEYS[6], first[1], 'g:' .. first[1])
	end
	if head and head ~= me then
		if mine() then
			return granted()
		end
		if me ~= '' then
			return reply(-4, redis.call('ZRANK', KEYS[5], me), flags)
		end
		return reply(-4, redis.call('ZCARD', KEYS[5]), flags)
	end
end

if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) or mine() then
	return granted()
end
return reply(0, redis.call('PTTL', KEYS[1]), flags)
