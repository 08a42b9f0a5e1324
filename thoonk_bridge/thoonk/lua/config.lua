-- Merge settings into a feed's config hash; an empty-string value with a '\0' marker deletes a field.
-- KEYS: feeds, feed.config:NAME  -- or on Redis Cluster only feed.config:NAME: the feed exists when
--       its config hash does (`feeds` lives in another slot)
-- ARGV: name, instance, field1, value1, ...
local name, instance = ARGV[1], ARGV[2]
local k_config = KEYS[#KEYS]
local exists
if #KEYS == 2 then
    exists = redis.call('SISMEMBER', KEYS[1], name) == 1
else
    exists = redis.call('EXISTS', k_config) == 1
end
if not exists then
    thoonk_fail('FeedDoesNotExist', {feed = name})
end
local actual = redis.call('HGET', k_config, 'type') or 'feed'
for i = 3, #ARGV, 2 do
    if ARGV[i] == 'type' and ARGV[i + 1] ~= actual then
        thoonk_fail('FeedTypeMismatch', {feed = name, actual = actual, wanted = ARGV[i + 1]})
    end
end
for i = 3, #ARGV, 2 do
    if ARGV[i + 1] == '\0' then
        redis.call('HDEL', k_config, ARGV[i])
    else
        redis.call('HSET', k_config, ARGV[i], ARGV[i + 1])
    end
end
if redis.call('HEXISTS', k_config, 'type') == 0 then
    redis.call('HSET', k_config, 'type', actual)
end
redis.call('PUBLISH', 'conffeed', name .. '\0' .. instance)
return 1
