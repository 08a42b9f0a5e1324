-- Prepended to every script by scripts.py. Helpers shared by all Thoonk scripts.
-- Errors are raised as 'THOONK <ExceptionClass> <json fields>'; the Python side turns
-- them into thoonk_bridge.thoonk exceptions. Every script validates before it writes, so
-- an error leaves Redis unchanged.

local function thoonk_fail(class, fields)
    error({err = 'THOONK ' .. class .. ' ' .. cjson.encode(fields)})
end

-- The feed's type from its config hash; a config hash without 'type' is a plain feed (as in
-- thoonk.py, whose set_config defaulted it); no config hash at all means the feed does not exist.
local function thoonk_check_type(config_key, name, wanted)
    local actual = redis.call('HGET', config_key, 'type')
    if not actual then
        if redis.call('EXISTS', config_key) == 0 then
            thoonk_fail('FeedDoesNotExist', {feed = name})
        end
        actual = 'feed'
    end
    if actual ~= wanted then
        thoonk_fail('FeedTypeMismatch', {feed = name, actual = actual, wanted = wanted})
    end
end

-- Server time in integer milliseconds (the contract's score unit), as a string.
local function thoonk_now_ms()
    local t = redis.call('TIME')
    return tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end

-- Server time in integer microseconds (used to build strictly increasing feed scores).
local function thoonk_now_us()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
