-- All items of a feed in order, read atomically.
-- KEYS: feed.ids:NAME, feed.items:NAME
-- ARGV: 'zset' (plain feed) | 'list' (sorted feed, queue)
-- Returns {id1, item1, id2, item2, ...}; ids without an item are skipped.
local ids
if ARGV[1] == 'zset' then
    ids = redis.call('ZRANGE', KEYS[1], 0, -1)
else
    ids = redis.call('LRANGE', KEYS[1], 0, -1)
end
local out = {}
if #ids == 0 then return out end
local items = redis.call('HMGET', KEYS[2], unpack(ids))
for i, id in ipairs(ids) do
    if items[i] then
        out[#out + 1] = id
        out[#out + 1] = items[i]
    end
end
return out
