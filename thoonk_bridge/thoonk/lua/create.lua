-- Create a feed, or make sure it exists.
-- KEYS: feeds, feed.config:NAME
-- ARGV: name, instance, mode ('create' | 'ensure'), field1, value1, ...  (includes 'type')
-- Returns {created (0|1), actual type}.
local name, instance, mode = ARGV[1], ARGV[2], ARGV[3]
if redis.call('SADD', KEYS[1], name) == 0 then
    if mode == 'create' then
        thoonk_fail('FeedExists', {feed = name})
    end
    local actual = redis.call('HGET', KEYS[2], 'type') or 'feed'
    -- Listed in `feeds` without any config hash: the contract's Create Feed is only SADD + newfeed.
    -- Such a feed is a plain feed (as a config without 'type'); give it the config hash that every
    -- per-feed script checks, or its first publish would fail with FeedDoesNotExist.
    if redis.call('EXISTS', KEYS[2]) == 0 then
        local wanted = 'feed'
        for i = 4, #ARGV, 2 do
            if ARGV[i] == 'type' then wanted = ARGV[i + 1] end
        end
        if wanted == actual then
            redis.call('HSET', KEYS[2], 'type', actual)
        end
    end
    return {0, actual}
end
local wanted = 'feed'
for i = 4, #ARGV, 2 do
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    if ARGV[i] == 'type' then wanted = ARGV[i + 1] end
end
redis.call('PUBLISH', 'newfeed', name .. '\0' .. instance)
redis.call('PUBLISH', 'conffeed', name .. '\0' .. instance)
return {1, wanted}
