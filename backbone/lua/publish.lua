-- Append a batch of events: for each, one stream entry (metadata) and one payload
-- hash keyed by the entry id. All of the batch is written, or none of it.
--
-- KEYS[1]  stream
-- KEYS[2]  the producer's batch record (dedupe of retried batches)
-- ARGV[1]  payload key prefix ("<stream>:p:")
-- ARGV[2]  batch sequence number of this producer ("" = keep no record)
-- ARGV[3]  "1" when this call retries a batch whose outcome is unknown
-- ARGV[4]  batch record time to live, milliseconds
-- ARGV[5]  number of events N
-- then N times: M, M metadata field/value strings, F, F payload field/value strings
--
-- Returns {duplicate (0|1), {entry id, ...}}.
local stream = KEYS[1]
local n = tonumber(ARGV[5])

if ARGV[3] == '1' and ARGV[2] ~= '' then
  local record = redis.call('GET', KEYS[2])
  if record then
    local space = string.find(record, ' ', 1, true)
    if space and string.sub(record, 1, space - 1) == ARGV[2] then
      local entries = redis.call('XRANGE', stream, string.sub(record, space + 1), '+', 'COUNT', n)
      local ids = {}
      for i = 1, #entries do ids[i] = entries[i][1] end
      return {1, ids}
    end
  end
end

local prefix = ARGV[1]
local ids = {}
local pos = 6

-- Undo the first ENTRIES stream entries and the first HASHES payload hashes.
local function rollback(entries, hashes, err)
  for j = 1, entries do
    redis.call('XDEL', stream, ids[j])
  end
  for j = 1, hashes do
    redis.call('DEL', prefix .. ids[j])
  end
  return redis.error_reply(err)
end

for i = 1, n do
  local m = tonumber(ARGV[pos])
  local added = redis.pcall('XADD', stream, '*', unpack(ARGV, pos + 1, pos + m))
  if type(added) == 'table' and added.err then
    return rollback(i - 1, i - 1, added.err)
  end
  ids[i] = added
  pos = pos + m + 1
  local f = tonumber(ARGV[pos])
  if f > 0 then
    local written = redis.pcall('HSET', prefix .. added, unpack(ARGV, pos + 1, pos + f))
    if type(written) == 'table' and written.err then
      return rollback(i, i - 1, written.err)
    end
  end
  pos = pos + f + 1
end

if ARGV[2] ~= '' and n > 0 then
  redis.call('SET', KEYS[2], ARGV[2] .. ' ' .. ids[1], 'PX', ARGV[4])
end
return {0, ids}
