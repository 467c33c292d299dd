-- Create a consumer group that vanished (a Redis restart without persistence, a
-- failover, XGROUP DESTROY) at a position that cannot skip events.
--
-- The consumer remembers the last entry it saw: its id and its fields. When that
-- entry is still in the stream, unchanged, the stream is the one it was reading,
-- and the group goes on right after it. Otherwise the stream is not the one it
-- read (the server came back empty, or a replica that lagged took over): its ids
-- say nothing about what was delivered (a clock behind gives the new stream ids
-- below the old ones), so the group starts at the beginning of what the stream
-- holds. That may deliver again what was handled before the loss; it never
-- skips an event.
--
-- When it goes on, it goes on after ARGV[3]: the last entry seen, or earlier when
-- the consumer still holds older events (read, not yet acked): the vanished
-- group's pending list is gone, so the new group must deliver them again, or a
-- crash before their acks would lose them.
--
-- KEYS[1]  stream
-- ARGV[1]  group
-- ARGV[2]  id of the last entry the consumer saw ("0-0": none)
-- ARGV[3]  the id to go on after when that entry is confirmed
-- ARGV[4]  "1" when ARGV[5..] are that entry's fields, "0" when they are unknown
-- ARGV[5..] the entry's field/value strings
--
-- Returns {created (1) or already there (0), position the group starts after}.
local start = '0'
if ARGV[4] == '1' and ARGV[2] ~= '0-0' then
  local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
  if #found == 1 then
    local fields = found[1][2]
    local same = #fields == #ARGV - 4
    if same then
      for i = 1, #fields do
        if fields[i] ~= ARGV[i + 4] then
          same = false
          break
        end
      end
    end
    if same then start = ARGV[3] end
  end
end
local created = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], start, 'MKSTREAM')
if type(created) == 'table' and created.err then
  if string.find(created.err, 'BUSYGROUP', 1, true) then
    return {0, start}
  end
  return redis.error_reply(created.err)
end
return {1, start}
