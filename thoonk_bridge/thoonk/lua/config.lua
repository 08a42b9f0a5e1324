-- Merge settings into a feed's config hash; an empty-string value with a '\0' marker deletes a field.
-- KEYS: feeds, feed.config:NAME
-- ARGV: name, instance, field1, value1, ...
local name, instance = ARGV[1], ARGV[2]
if redis.call('SISMEMBER', KEYS[1], name) == 0 then
    thoonk_fail('FeedDoesNotExist', {feed = name})
end
local actual = redis.call('HGET', KEYS[2], 'type') or 'feed'
for i = 3, #ARGV, 2 do
    if ARGV[i] == 'type' and ARGV[i + 1] ~= actual then
        thoonk_fail('FeedTypeMismatch', {feed = name, actual = actual, wanted = ARGV[i + 1]})
    end
end
for i = 3, #ARGV, 2 do
    if ARGV[i + 1] == '\0' then
        redis.call('HDEL', KEYS[2], ARGV[i])
    else
        redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    end
end
if redis.call('HEXISTS', KEYS[2], 'type') == 0 then
    redis.call('HSET', KEYS[2], 'type', actual)
end
redis.call('PUBLISH', 'conffeed', name .. '\0' .. instance)
return 1
