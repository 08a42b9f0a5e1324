-- Retract an item from a sorted feed.
-- KEYS: feed.config:NAME, feed.ids:NAME, feed.items:NAME
-- ARGV: name, id
local name, id = ARGV[1], ARGV[2]
thoonk_check_type(KEYS[1], name, 'sorted_feed')
if redis.call('HDEL', KEYS[3], id) == 0 then
    return 0
end
redis.call('LREM', KEYS[2], 1, id)
redis.call('PUBLISH', 'feed.retract:' .. name, id)
return 1
