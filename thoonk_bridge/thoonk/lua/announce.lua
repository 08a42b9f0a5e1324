-- Redis Cluster: announce a feed's lifecycle event from the node that holds the feed's slot.
-- KEYS: feed.config:NAME (not read: it routes the call to the feed's node)
-- ARGV: message, channel1, channel2, ...
-- Messages published by one node reach every subscriber in the order that node sent them, while
-- messages from different nodes may interleave. Publishing every event of a feed (create, config,
-- delete, and its item events, which its per-feed scripts send) from the feed's own node keeps
-- them in order; an unrouted PUBLISH would go to any node.
for i = 2, #ARGV do
    redis.call('PUBLISH', ARGV[i], ARGV[1])
end
return #ARGV - 1
