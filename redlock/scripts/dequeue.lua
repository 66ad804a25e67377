-- Take a waiter out of a key's queue: it holds the lock now, handed over by
-- the previous holder of its Client without a round trip, and must not stay
-- ahead of the waiters behind it.
--
-- KEYS[1] queue  KEYS[2] queue entries' expiry  ARGV[1] waiter id
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
