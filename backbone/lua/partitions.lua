-- Record or read the partition count of a stream (backbone/partitions.py).
--
-- KEYS[1]  the count's record, "<stream>:partitions" (a string)
-- KEYS[2]  the whole stream's own key (written when it is not partitioned)
-- ARGV[1]  the count N the caller declares
--
-- Returns the recorded count; records N when none is and N > 1 (an
-- unpartitioned stream needs no record); returns -1 when the record is not a
-- count (written by hand); returns -(XLEN + 2) when N > 1 is declared for a
-- stream that already holds events written without partitions (its keys'
-- order would break), recording nothing.
local recorded = redis.call('GET', KEYS[1])
if recorded then
  if not string.match(recorded, '^%d+$') then
    return -1
  end
  local count = tonumber(recorded)
  if count < 1 or count > 1024 then
    return -1
  end
  return count
end
local wanted = tonumber(ARGV[1])
if wanted == 1 then
  return 1
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return -redis.call('XLEN', KEYS[2]) - 2
end
redis.call('SET', KEYS[1], wanted)
return wanted
