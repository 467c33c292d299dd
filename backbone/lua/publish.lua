-- Append a batch of events: for each, one stream entry (metadata) and one payload
-- hash keyed by the entry id. All of the batch is written, or none of it.
--
-- KEYS[1]  stream
-- KEYS[2]  the producer's batch record (dedupe of retried batches)
-- ARGV[1]  payload key prefix ("<stream>:p:")
-- ARGV[2]  batch sequence number of this producer (the same on every attempt)
-- ARGV[3]  batch record time to live, milliseconds
-- ARGV[4]  number of events N
-- ARGV[5]  number of templates T (one per operation in the batch), then T times:
--            M, M metadata field/value strings, F, F payload field names
-- then N times:
--            template number (1-based), producer time, X, X extra metadata
--            field/value strings, then the template's F payload values
--
-- Templates keep the per-event arguments to what differs between events, which
-- is what the client has to pack and Redis has to parse.
--
-- Returns {duplicate (0|1), {entry id, ...}}.
local stream = KEYS[1]
local n = tonumber(ARGV[4])

-- The record names this producer's last batch: "<batch no> <first id> <last id>".
-- Finding this batch's number there means an earlier attempt whose reply was lost
-- wrote it: answer with its entries instead of writing them again. It is checked
-- on every call, since a first attempt that timed out may arrive after its retry.
local record = redis.call('GET', KEYS[2])
if record then
  local seq, first, last = string.match(record, '^(%S+) (%S+) (%S+)$')
  if seq == ARGV[2] then
    local entries = redis.call('XRANGE', stream, first, last)
    local ids = {}
    for i = 1, #entries do ids[i] = entries[i][1] end
    return {1, ids}
  end
end

local prefix = ARGV[1]
local metas, hashes, widths = {}, {}, {}
local pos = 6
for t = 1, tonumber(ARGV[5]) do
  local m = tonumber(ARGV[pos])
  local meta = {}
  for j = 1, m do meta[j] = ARGV[pos + j] end
  meta[m + 1] = 't'
  meta[m + 2] = ''
  pos = pos + m + 1
  local f = tonumber(ARGV[pos])
  local hash = {}
  for j = 1, f do
    hash[2 * j - 1] = ARGV[pos + j]
    hash[2 * j] = ''
  end
  pos = pos + f + 1
  metas[t], hashes[t], widths[t] = meta, hash, f
end

local ids = {}

-- Undo the first ENTRIES stream entries and the first HASHES payload hashes.
local function rollback(entries, hashes_written, err)
  for j = 1, entries do
    redis.call('XDEL', stream, ids[j])
  end
  for j = 1, hashes_written do
    redis.call('DEL', prefix .. ids[j])
  end
  return redis.error_reply(err)
end

for i = 1, n do
  local t = tonumber(ARGV[pos])
  local meta = metas[t]
  local m = #meta
  meta[m] = ARGV[pos + 1]
  local x = tonumber(ARGV[pos + 2])
  local added
  if x == 0 then
    added = redis.pcall('XADD', stream, '*', unpack(meta))
  else
    local full = {unpack(meta)}
    for j = 1, x do full[m + j] = ARGV[pos + 2 + j] end
    added = redis.pcall('XADD', stream, '*', unpack(full))
  end
  if type(added) == 'table' and added.err then
    return rollback(i - 1, i - 1, added.err)
  end
  ids[i] = added
  pos = pos + 3 + x
  local f = widths[t]
  if f > 0 then
    local hash = hashes[t]
    for j = 1, f do hash[2 * j] = ARGV[pos + j - 1] end
    local written = redis.pcall('HSET', prefix .. added, unpack(hash))
    if type(written) == 'table' and written.err then
      return rollback(i, i - 1, written.err)
    end
  end
  pos = pos + f
end

if n > 0 then
  redis.call('SET', KEYS[2], ARGV[2] .. ' ' .. ids[1] .. ' ' .. ids[n], 'PX', ARGV[3])
end
return {0, ids}
