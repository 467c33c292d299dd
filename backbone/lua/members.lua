-- The live members of one consumer group's ordered subscription to a stream:
-- each member writes its own expiry time on every heartbeat, and every member
-- reads the whole list to compute the same assignment of partitions. Expiry is
-- the server's time (TIME), so members' clocks may disagree.
--
-- KEYS[1]  the members hash: member -> expiry (Unix ms, the server's clock)
-- ARGV[1]  member
-- ARGV[2]  time to live (ms)
-- ARGV[3]  "join" (join, or a heartbeat) or "leave"
--
-- Returns the live members (expired ones are removed), in no particular order.
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ttl = tonumber(ARGV[2])
if ARGV[3] == 'join' then
  redis.call('HSET', KEYS[1], ARGV[1], ms + ttl)
else
  redis.call('HDEL', KEYS[1], ARGV[1])
end
local flat = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #flat, 2 do
  if tonumber(flat[i + 1]) and tonumber(flat[i + 1]) > ms then
    live[#live + 1] = flat[i]
  else
    redis.call('HDEL', KEYS[1], flat[i])
  end
end
if #live > 0 then
  -- Members that all died leave no hash behind for long.
  redis.call('PEXPIRE', KEYS[1], math.max(ttl * 10, 60000))
end
return live
