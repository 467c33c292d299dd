-- Move one event of a consumer group to the dead-letter stream: append the dead
-- letter, copy the event's payload hash next to it, acknowledge the event in the
-- group. The ack comes last, so a failure before it leaves the event pending
-- (and a failure after the append removes the dead letter again).
--
-- KEYS[1]  stream
-- KEYS[2]  dead-letter stream
-- KEYS[3]  payload hash of the event
-- KEYS[4]  payload copy for the dead letter
-- KEYS[5]  (fenced only) the partition's lease, see lease.lua
-- ARGV[1]  group
-- ARGV[2]  entry id
-- ARGV[3]  "1": only when the entry is still pending in the group (else skip);
--          "0": in any case. Fenced (an ordered subscription): followed by a
--          space and the fence "<token> <owner>"; then nothing is written
--          unless KEYS[5] holds exactly that fence, and the call fails with an
--          error starting "FENCED"
-- ARGV[4..] dead-letter field/value strings
--
-- Returns the dead letter's entry id, or false when skipped.
local mode = ARGV[3]
if #mode > 1 then
  local fence = string.sub(mode, 3)
  if redis.call('GET', KEYS[5]) ~= fence then
    return redis.error_reply('FENCED the lease ' .. KEYS[5] .. ' is no longer "' ..
      fence .. '"; another member holds the partition or it expired')
  end
  mode = string.sub(mode, 1, 1)
end
if mode == '1' then
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
  if #pending == 0 then
    return false
  end
end
local added = redis.pcall('XADD', KEYS[2], '*', unpack(ARGV, 4))
if type(added) == 'table' and added.err then
  return redis.error_reply(added.err)
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  local copied = redis.pcall('COPY', KEYS[3], KEYS[4], 'REPLACE')
  if type(copied) == 'table' and copied.err then
    redis.call('XDEL', KEYS[2], added)
    return redis.error_reply(copied.err)
  end
end
if mode == '1' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
end
return added
