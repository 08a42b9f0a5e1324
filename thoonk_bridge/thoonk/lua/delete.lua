-- Delete a feed and every key it owns.
-- KEYS: feeds, then every per-feed key (see keys.py)
-- ARGV: name, instance
local name, instance = ARGV[1], ARGV[2]
if redis.call('SREM', KEYS[1], name) == 0 then
    thoonk_fail('FeedDoesNotExist', {feed = name})
end
for i = 2, #KEYS do
    redis.call('DEL', KEYS[i])
end
redis.call('PUBLISH', 'delfeed', name .. '\0' .. instance)
return 1
