-- Put items on a queue. Normal priority: LPUSH (taken last, so the queue is FIFO); high: RPUSH.
-- KEYS: feed.config:NAME, feed.ids:NAME, feed.items:NAME, feed.publishes:NAME
-- ARGV: name, high ('1' | '0'), id1, item1, id2, item2, ...
local name, high = ARGV[1], ARGV[2]
thoonk_check_type(KEYS[1], name, 'queue')
for i = 3, #ARGV, 2 do
    if high == '1' then
        redis.call('RPUSH', KEYS[2], ARGV[i])
    else
        redis.call('LPUSH', KEYS[2], ARGV[i])
    end
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
    redis.call('INCR', KEYS[4])
end
return (#ARGV - 2) / 2
