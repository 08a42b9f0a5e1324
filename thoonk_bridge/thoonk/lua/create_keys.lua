-- Redis Cluster: create a feed's config hash, or make sure it exists (the per-feed step of create).
-- KEYS: feed.config:NAME
-- ARGV: name, mode ('create' | 'ensure'), field1, value1, ...  (includes 'type')
-- Returns {created (0|1), actual type}. The client then adds NAME to `feeds` (SADD, in the same
-- round trip, another slot) and, when this created the feed, announces newfeed and conffeed.
-- A config hash is what makes a feed exist for every per-feed script (thoonk_check_type).
local name, mode = ARGV[1], ARGV[2]
if redis.call('EXISTS', KEYS[1]) == 1 then
    if mode == 'create' then
        thoonk_fail('FeedExists', {feed = name})
    end
    return {0, redis.call('HGET', KEYS[1], 'type') or 'feed'}
end
local wanted = 'feed'
for i = 3, #ARGV, 2 do
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    if ARGV[i] == 'type' then wanted = ARGV[i + 1] end
end
return {1, wanted}
