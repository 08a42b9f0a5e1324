-- Put back jobs that workers lost.
-- KEYS: feed.config:NAME, feed.ids:NAME, feed.items:NAME, feed.claimed:NAME, feed.cancelled:NAME,
--       feed.stalled:NAME
-- ARGV: name
-- 1. With config 'timeout' (seconds) > 0: jobs claimed longer ago than that are cancelled
--    (back on the queue, failure count + 1). Claim scores below 1e11 are seconds (thoonk.py).
-- 2. Jobs in no state at all (an item, but not queued, claimed or stalled: a worker died between
--    BRPOP and its claim) are queued again.
-- Returns {timed out count, orphan count}.
local name = ARGV[1]
local k_ids, k_items, k_claimed, k_cancelled, k_stalled = KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
thoonk_check_type(KEYS[1], name, 'job')
local timed_out = 0
local timeout = tonumber(redis.call('HGET', KEYS[1], 'timeout') or '0') or 0
if timeout > 0 then
    local cutoff = tonumber(thoonk_now_ms()) - timeout * 1000
    -- Claims are scored in ms by the contract, but thoonk.py's Job.get scores them in seconds
    -- (time.time()). A score below 1e11 is read as seconds: as ms it would be before 1973, as
    -- seconds it is before the year 5138. Without this, every job a thoonk.py worker is running
    -- would look decades late and be handed to a second worker.
    local late = redis.call('ZRANGEBYSCORE', k_claimed, '1e11', string.format('%d', cutoff))
    local late_s = redis.call('ZRANGEBYSCORE', k_claimed, '-inf', string.format('%.3f', cutoff / 1000))
    for _, id in ipairs(late_s) do late[#late + 1] = id end
    for _, id in ipairs(late) do
        redis.call('ZREM', k_claimed, id)
        redis.call('HINCRBY', k_cancelled, id, 1)
        redis.call('LPUSH', k_ids, id)
        timed_out = timed_out + 1
    end
end
local known = {}
for _, id in ipairs(redis.call('LRANGE', k_ids, 0, -1)) do known[id] = true end
for _, id in ipairs(redis.call('ZRANGE', k_claimed, 0, -1)) do known[id] = true end
for _, id in ipairs(redis.call('SMEMBERS', k_stalled)) do known[id] = true end
local orphans = 0
for _, id in ipairs(redis.call('HKEYS', k_items)) do
    if not known[id] then
        redis.call('LPUSH', k_ids, id)
        orphans = orphans + 1
    end
end
return {timed_out, orphans}
