-- Add an item to a sorted feed: at the end, at the beginning, or before/after an existing item.
-- KEYS: feed.config:NAME, feed.ids:NAME, feed.items:NAME, feed.publishes:NAME, feed.idincr:NAME
-- ARGV: name, where ('end' | 'begin' | 'before' | 'after'), relative id ('' for end/begin), item
-- Returns the new id (from feed.idincr, as in the contract).
local name, where, rel, item = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local k_config, k_ids, k_items, k_pubs, k_incr = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
thoonk_check_type(k_config, name, 'sorted_feed')
if (where == 'before' or where == 'after') and redis.call('HEXISTS', k_items, rel) == 0 then
    thoonk_fail('ItemDoesNotExist', {feed = name, id = rel})
end
local id = tostring(redis.call('INCR', k_incr))
local position
if where == 'end' then
    redis.call('RPUSH', k_ids, id)
    position = ':end'
elseif where == 'begin' then
    redis.call('LPUSH', k_ids, id)
    position = 'begin:'
elseif where == 'before' then
    redis.call('LINSERT', k_ids, 'BEFORE', rel, id)
    position = ':' .. rel
else
    redis.call('LINSERT', k_ids, 'AFTER', rel, id)
    position = rel .. ':'
end
redis.call('HSET', k_items, id, item)
redis.call('INCR', k_pubs)
redis.call('PUBLISH', 'feed.publish:' .. name, id .. '\0' .. item)
redis.call('PUBLISH', 'feed.position:' .. name, id .. '\0' .. position)
return id
