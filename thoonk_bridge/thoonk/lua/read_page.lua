-- One page of a feed's items, in feed order: a bounded read, so that reading a feed of any size
-- never runs one long command (Redis serves nobody else meanwhile) nor unpacks more ids than Lua can.
-- KEYS: feed.ids:NAME, feed.items:NAME
-- ARGV: 'zset', min score (inclusive), offset among the items of that score onwards, count
--     | 'list', start index, count
-- Returns {id1, score1, item1, id2, score2, item2, ...} (score '' for lists; item false when an id
-- has no item). A plain feed is paged by score, not by index: an item edited (moved to the end) during
-- the read shifts no other item, so paging never skips one; it is seen again at the end.
local ids, scores = {}, {}
if ARGV[1] == 'zset' then
    local flat = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], '+inf', 'WITHSCORES', 'LIMIT', ARGV[3], ARGV[4])
    for i = 1, #flat, 2 do
        ids[#ids + 1] = flat[i]
        scores[#scores + 1] = flat[i + 1]
    end
else
    local start = tonumber(ARGV[2])
    ids = redis.call('LRANGE', KEYS[1], start, start + tonumber(ARGV[3]) - 1)
end
local out = {}
if #ids == 0 then return out end
local items = redis.call('HMGET', KEYS[2], unpack(ids))
for i, id in ipairs(ids) do
    out[#out + 1] = id
    out[#out + 1] = scores[i] or ''
    out[#out + 1] = items[i]
end
return out
