-- Claim the next job.
-- KEYS: feed.config:NAME, feed.ids:NAME, feed.items:NAME, feed.claimed:NAME, feed.cancelled:NAME
-- ARGV: name, id ('' = pop the next id here; else an id the caller already took with BRPOP)
-- Returns {id, item, cancelled count}, or false. An id whose job is gone (finished or retracted)
-- or already claimed (a duplicate left by maintenance racing a worker) is dropped, never claimed twice.
local name, id = ARGV[1], ARGV[2]
local k_ids, k_items, k_claimed, k_cancelled = KEYS[2], KEYS[3], KEYS[4], KEYS[5]
thoonk_check_type(KEYS[1], name, 'job')
while true do
    if id == '' then
        id = redis.call('RPOP', k_ids)
        if not id then return false end
    end
    local item = redis.call('HGET', k_items, id)
    if item and not redis.call('ZSCORE', k_claimed, id) then
        redis.call('ZADD', k_claimed, thoonk_now_ms(), id)
        local cancelled = redis.call('HGET', k_cancelled, id) or '0'
        return {id, item, cancelled}
    end
    if ARGV[2] ~= '' then return false end
    id = ''
end
