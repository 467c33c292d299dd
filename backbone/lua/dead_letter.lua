-- Move one event of a consumer group to the dead-letter stream: acknowledge it in
-- the group, copy its payload hash next to the dead letter, append the dead letter.
--
-- KEYS[1]  stream
-- KEYS[2]  dead-letter stream
-- KEYS[3]  payload hash of the event
-- KEYS[4]  payload copy for the dead letter
-- ARGV[1]  group
-- ARGV[2]  entry id
-- ARGV[3]  "1": only when the entry is still pending in the group (else skip)
-- ARGV[4..] dead-letter field/value strings
--
-- Returns the dead letter's entry id, or false when skipped.
if ARGV[3] == '1' then
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then
    return false
  end
end
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('COPY', KEYS[3], KEYS[4], 'REPLACE')
end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
