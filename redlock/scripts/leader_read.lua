-- Read the lock's holder and the election's leader record on one node.
--
-- KEYS[1] lock key  KEYS[2] record key
--
-- Returns {holder token or "", record token, id, value, fence, seq}, the
-- record fields "" when there is none.
local holder = redis.call('GET', KEYS[1]) or ''
local out = {holder}
for _, f in ipairs({'token', 'id', 'value', 'fence', 'seq'}) do
	out[#out + 1] = redis.call('HGET', KEYS[2], f) or ''
end
return out
