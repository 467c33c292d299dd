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
-- KEYS[1]  stream
-- ARGV[1]  group
-- ARGV[2]  id of the last entry the consumer saw ("0-0": none)
-- ARGV[3]  "1" when ARGV[4..] are that entry's fields, "0" when they are unknown
-- ARGV[4..] the entry's field/value strings
--
-- Returns {created (1) or already there (0), position the group starts after}.
local start = '0'
if ARGV[3] == '1' and ARGV[2] ~= '0-0' then
  local found = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
  if #found == 1 then
    local fields = found[1][2]
    local same = #fields == #ARGV - 3
    if same then
      for i = 1, #fields do
        if fields[i] ~= ARGV[i + 3] then
          same = false
          break
        end
      end
    end
    if same then start = ARGV[2] end
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
