-- Move an item of a sorted feed. Position: ':REL' before REL, 'REL:' after REL, 'begin:', ':end'.
-- KEYS: feed.config:NAME, feed.ids:NAME, feed.items:NAME
-- ARGV: name, id, position
local name, id, position = ARGV[1], ARGV[2], ARGV[3]
local k_ids, k_items = KEYS[2], KEYS[3]
thoonk_check_type(KEYS[1], name, 'sorted_feed')
if redis.call('HEXISTS', k_items, id) == 0 then
    thoonk_fail('ItemDoesNotExist', {feed = name, id = id})
end
local dir, rel
if position == 'begin:' then
    dir = 'begin'
elseif position == ':end' then
    dir = 'end'
elseif string.sub(position, 1, 1) == ':' then
    dir, rel = 'BEFORE', string.sub(position, 2)
else
    dir, rel = 'AFTER', string.sub(position, 1, -2)
end
if rel and redis.call('HEXISTS', k_items, rel) == 0 then
    thoonk_fail('ItemDoesNotExist', {feed = name, id = rel})
end
redis.call('LREM', k_ids, 1, id)
if dir == 'begin' then
    redis.call('LPUSH', k_ids, id)
elseif dir == 'end' then
    redis.call('RPUSH', k_ids, id)
else
    redis.call('LINSERT', k_ids, dir, rel, id)
end
redis.call('PUBLISH', 'feed.position:' .. name, id .. '\0' .. position)
return 1
