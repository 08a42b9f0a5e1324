-- Finish a claimed job.
-- KEYS: feed.config:NAME, feed.items:NAME, feed.claimed:NAME, feed.cancelled:NAME,
--       feed.published:NAME, feed.finishes:NAME, feed.jobfinished:NAME\0ID
-- ARGV: name, id, has_result ('1'|'0'), result, store ('1'|'0'), ttl seconds ('' = none)
-- With a result, publishes job.finish:NAME 'id\0result'; with store, also LPUSHes 'query\0result'
-- on feed.jobfinished:NAME\0ID for get_result (expiring after ttl when given).
local name, id, has_result, result, store, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
thoonk_check_type(KEYS[1], name, 'job')
if not redis.call('ZSCORE', KEYS[3], id) then
    thoonk_fail('JobNotClaimed', {feed = name, id = id})
end
local query = redis.call('HGET', KEYS[2], id) or ''
redis.call('ZREM', KEYS[3], id)
redis.call('HDEL', KEYS[4], id)
redis.call('ZREM', KEYS[5], id)
redis.call('INCR', KEYS[6])
redis.call('HDEL', KEYS[2], id)
if store == '1' then
    redis.call('LPUSH', KEYS[7], query .. '\0' .. result)
    if ttl ~= '' then redis.call('EXPIRE', KEYS[7], ttl) end
end
if has_result == '1' then
    redis.call('PUBLISH', 'job.finish:' .. name, id .. '\0' .. result)
end
return 1
