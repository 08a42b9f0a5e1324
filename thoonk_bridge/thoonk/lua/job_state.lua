-- Cancel, stall, retry or retract a job.
-- KEYS: feed.config:NAME, feed.ids:NAME, feed.items:NAME, feed.claimed:NAME, feed.cancelled:NAME,
--       feed.stalled:NAME, feed.published:NAME
-- ARGV: name, action ('cancel' | 'stall' | 'retry' | 'retract'), id
-- cancel: claimed -> queued again, failure count + 1; stall: claimed -> stalled;
-- retry: stalled -> queued; retract: removed from every state. Returns 1 (retract: 0 if unknown).
local name, action, id = ARGV[1], ARGV[2], ARGV[3]
local k_ids, k_items, k_claimed, k_cancelled, k_stalled, k_published =
    KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
thoonk_check_type(KEYS[1], name, 'job')
if action == 'cancel' then
    if redis.call('ZREM', k_claimed, id) == 0 then
        thoonk_fail('JobNotClaimed', {feed = name, id = id})
    end
    redis.call('HINCRBY', k_cancelled, id, 1)
    redis.call('LPUSH', k_ids, id)
elseif action == 'stall' then
    if redis.call('ZREM', k_claimed, id) == 0 then
        thoonk_fail('JobNotClaimed', {feed = name, id = id})
    end
    redis.call('HDEL', k_cancelled, id)
    redis.call('SADD', k_stalled, id)
    redis.call('ZREM', k_published, id)
elseif action == 'retry' then
    if redis.call('SREM', k_stalled, id) == 0 then
        thoonk_fail('JobNotStalled', {feed = name, id = id})
    end
    redis.call('LPUSH', k_ids, id)
    redis.call('ZADD', k_published, thoonk_now_ms(), id)
elseif action == 'retract' then
    if redis.call('HDEL', k_items, id) == 0 then
        return 0
    end
    redis.call('HDEL', k_cancelled, id)
    redis.call('ZREM', k_published, id)
    redis.call('SREM', k_stalled, id)
    redis.call('ZREM', k_claimed, id)
    redis.call('LREM', k_ids, 0, id)
end
return 1
