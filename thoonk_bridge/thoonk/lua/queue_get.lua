-- Take the next item off a queue.
-- KEYS: feed.config:NAME, feed.ids:NAME, feed.items:NAME
-- ARGV: name, id ('' = pop the next id here; else an id the caller already took with BRPOP)
-- Returns {id, item}, or false when the queue is empty. Ids without an item are dropped.
local name, id = ARGV[1], ARGV[2]
thoonk_check_type(KEYS[1], name, 'queue')
while true do
    if id == '' then
        id = redis.call('RPOP', KEYS[2])
        if not id then return false end
    end
    local item = redis.call('HGET', KEYS[3], id)
    if item then
        redis.call('HDEL', KEYS[3], id)
        return {id, item}
    end
    if ARGV[2] ~= '' then return false end
    id = ''
end
