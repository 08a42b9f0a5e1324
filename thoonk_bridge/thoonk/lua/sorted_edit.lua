-- Replace an item of a sorted feed in place (the contract announces it on feed.publish).
-- KEYS: feed.config:NAME, feed.items:NAME, feed.publishes:NAME
-- ARGV: name, id, item
local name, id, item = ARGV[1], ARGV[2], ARGV[3]
thoonk_check_type(KEYS[1], name, 'sorted_feed')
if redis.call('HEXISTS', KEYS[2], id) == 0 then
    thoonk_fail('ItemDoesNotExist', {feed = name, id = id})
end
redis.call('HSET', KEYS[2], id, item)
redis.call('INCR', KEYS[3])
redis.call('PUBLISH', 'feed.publish:' .. name, id .. '\0' .. item)
return 1
