-- Put jobs on a job feed. Normal priority: LPUSH (FIFO); high: RPUSH (taken next).
-- KEYS: feed.config:NAME, feed.ids:NAME, feed.items:NAME, feed.publishes:NAME, feed.published:NAME
-- ARGV: name, high ('1' | '0'), id1, item1, ...
local name, high = ARGV[1], ARGV[2]
thoonk_check_type(KEYS[1], name, 'job')
local now = thoonk_now_ms()
for i = 3, #ARGV, 2 do
    if high == '1' then
        redis.call('RPUSH', KEYS[2], ARGV[i])
    else
        redis.call('LPUSH', KEYS[2], ARGV[i])
    end
    redis.call('INCR', KEYS[4])
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
    redis.call('ZADD', KEYS[5], now, ARGV[i])
end
return (#ARGV - 2) / 2
