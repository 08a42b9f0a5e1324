-- Redis Cluster: delete every key a feed owns (the per-feed step of delete).
-- KEYS: every per-feed key (see keys.py), feed.config:NAME first
-- Returns 1 if the feed's config hash existed, else 0. The client removes NAME from `feeds`
-- (SREM, same round trip, another slot) and announces delfeed when either step found the feed.
local existed = redis.call('EXISTS', KEYS[1])
for i = 1, #KEYS do
    redis.call('DEL', KEYS[i])
end
return existed
