-- Retract an item from a plain feed.
-- KEYS: feed.config:NAME, feed.ids:NAME, feed.items:NAME
-- ARGV: name, id
-- Returns 1 if the item was there, 0 if not (nothing is published then).
local name, id = ARGV[1], ARGV[2]
thoonk_check_type(KEYS[1], name, 'feed')
local in_ids = redis.call('ZREM', KEYS[2], id)
local in_items = redis.call('HDEL', KEYS[3], id)
if in_ids + in_items == 0 then
    return 0
end
redis.call('PUBLISH', 'feed.retract:' .. name, id)
return 1
