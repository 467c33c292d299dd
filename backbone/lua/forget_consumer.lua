-- Remove a consumer from its group when it holds no pending entry (a clean
-- stop), so groups do not fill up with the names of processes long gone. A
-- consumer that still holds entries stays: its entries stay pending for it (a
-- restart under its name takes them back) or for the members that claim them.
--
-- KEYS[1]  stream
-- ARGV[1]  group
-- ARGV[2]  consumer
--
-- Returns 1 when the consumer was removed, 0 when it stays.
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
