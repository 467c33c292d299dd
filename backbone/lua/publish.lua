-- Append a batch of events: for each, one stream entry (metadata) and one payload
-- hash keyed by the entry id. All of the batch is written, or none of it.
--
-- KEYS[1]  stream
-- KEYS[2]  the producer's batch record (dedupe of retried and late attempts)
-- KEYS[3]  the stream's operation-version marks (optional; see versions.lua)
-- ARGV[1]  payload key prefix ("<stream>:p:")
-- ARGV[2]  batch number: the same on every attempt of a batch, higher for
--          every later batch of the producer instance
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
-- After a batch is written to a PARTITION of a stream (a stream key with '#',
-- which no other key has), rings the partition's doorbell: SPUBLISH on the
-- sharded channel "<stream>:bell" (in the stream's hash tag, so in this
-- script's slot on a Redis Cluster) with the batch's last entry id;
-- backbone/doorbell.py wakes the readers that listen there. Only partitions:
-- on a cluster every SPUBLISH is sent to the shard's replicas over the cluster
-- bus, listener or not, and only partitions have listeners. Through pcall, so a
-- server without sharded Pub/Sub still writes; a retried batch does not ring.
--
-- Returns {status, detail}:
--   {0, {entry id, ...}, {deprecated "op:version", ...}}  written now
--   {1, {entry id, ...}}  an earlier attempt of this batch wrote these entries
--   {2, error text}       Redis refused an earlier attempt of this batch
--   {3, batch number}     stale: a later batch of this producer was recorded
--   {4, "op:version"}     that operation version is retired
-- and nothing is written unless the status is 0.
local stream = KEYS[1]
local n = tonumber(ARGV[4])
local batch = tonumber(ARGV[2])

-- The record describes this producer's last batch that reached Redis:
-- "<batch no> <first id> <last id>" when it was written, "<batch no> ! <error>"
-- when Redis refused it. A producer has one batch in flight and numbers its
-- batches upwards, so an attempt numbered below the record is stale: its batch
-- was written already, or its caller was told it failed. An attempt with the
-- record's number is a retry: answer with what the first attempt did. Checked
-- on every call, since an attempt that timed out may arrive after its retry, or
-- after later batches.
local record = redis.call('GET', KEYS[2])
if record then
  local digits, refused = string.match(record, '^(%d+) ! (.*)$')
  local first, last
  if not digits then
    digits, first, last = string.match(record, '^(%d+) (%S+) (%S+)$')
  end
  local seq = tonumber(digits)
  if seq ~= nil and batch < seq then
    return {3, digits}
  end
  if seq == batch then
    if refused then
      return {2, refused}
    end
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
local MARKS, RETIRED = KEYS[3], 4

-- Operation versions a newer contract retired are refused before anything is
-- written; deprecated ones are written and reported. Marks only ever go up
-- (versions.lua), so a retry of a refused batch is refused again. A template's
-- metadata starts o, name, v, version, c, contract (writer.py). A marks key
-- someone overwrote with another type marks nothing.
local deprecated = {}
if MARKS then
  for t = 1, #metas do
    local mark = metas[t][6] .. '.' .. metas[t][2] .. ':' .. metas[t][4]
    local status = redis.pcall('HGET', MARKS, mark)
    if status == 'retired' then return {RETIRED, mark} end
    if status == 'deprecated' then deprecated[#deprecated + 1] = mark end
  end
end

local ids = {}

-- Undo the first ENTRIES stream entries and the first HASHES payload hashes, and
-- record the refusal, so that a late attempt of this batch writes nothing either.
local function rollback(entries, hashes_written, err)
  for j = 1, entries do
    redis.call('XDEL', stream, ids[j])
  end
  for j = 1, hashes_written do
    redis.call('DEL', prefix .. ids[j])
  end
  redis.pcall('SET', KEYS[2], ARGV[2] .. ' ! ' .. tostring(err), 'PX', ARGV[3])
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
  if string.find(stream, '#', 1, true) then
    redis.pcall('SPUBLISH', stream .. ':bell', ids[n])
  end
end
return {0, ids, deprecated}
