-- Publish (or edit) one or more items on a plain feed, exactly as the contract's Publish does it
-- (thoonk.py contract.txt), once per item in order:
--   with max_length = MAX > 0: every id of ZRANGE feed.ids 0 -MAX except the id being published is
--   removed (ZREM, HDEL) and announced on feed.retract; then the id is added (ZADD) and announced on
--   feed.publish (new id) or feed.edit (id already there).
-- So re-publishing '2' on [1,2,3] with max_length 3 retracts '1' and leaves [3,2]: like the peers,
-- an edit can leave the feed one short of MAX, and it is never the edited item that gets trimmed.
-- KEYS: feed.config:NAME, feed.ids:NAME, feed.items:NAME, feed.publishes:NAME
-- ARGV: name, id1, item1, id2, item2, ...
-- Each item gets a score (milliseconds, microsecond fraction) strictly above the newest one, so
-- ZRANGE order is publish order and an edit moves the item to the end.
-- Returns one flag per item: 1 published (new id), 0 edited.
local name = ARGV[1]
local k_config, k_ids, k_items, k_pubs = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
thoonk_check_type(k_config, name, 'feed')
-- A peer may have written '3.0' or garbage: an integer part, or no bound at all.
local max = math.floor(tonumber(redis.call('HGET', k_config, 'max_length') or '0') or 0)
if max > 1e13 then max = 0 end  -- beyond any real feed, and -MAX must still print as an integer
local ch_publish, ch_edit, ch_retract = 'feed.publish:' .. name, 'feed.edit:' .. name, 'feed.retract:' .. name

local now = thoonk_now_us()
local top = redis.call('ZRANGE', k_ids, -1, -1, 'WITHSCORES')
if top[2] then
    local last = math.floor(tonumber(top[2]) * 1000 + 0.5)
    if last >= now then now = last + 1 end
end

local flags = {}
for i = 2, #ARGV, 2 do
    local id, item = ARGV[i], ARGV[i + 1]
    if max > 0 then
        for _, old_id in ipairs(redis.call('ZRANGE', k_ids, 0, -max)) do
            if old_id ~= id then
                redis.call('ZREM', k_ids, old_id)
                redis.call('HDEL', k_items, old_id)
                redis.call('PUBLISH', ch_retract, old_id)
            end
        end
    end
    local score = string.format('%d.%03d', math.floor(now / 1000), now % 1000)
    now = now + 1
    local isnew = redis.call('ZADD', k_ids, score, id)
    redis.call('INCR', k_pubs)
    redis.call('HSET', k_items, id, item)
    if isnew == 1 then
        redis.call('PUBLISH', ch_publish, id .. '\0' .. item)
    else
        redis.call('PUBLISH', ch_edit, id .. '\0' .. item)
    end
    flags[#flags + 1] = isnew
end
return flags
