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
--          or, when T is -1 (one template, no event with extra metadata, the
--          usual batch), N times only: producer time, then the F values
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
--
-- Most of a batch's cost is this script's, on the server, so it does little
-- besides its commands: each template's argument tables are built once and an
-- event only overwrites their slots (no table per event), a run of events of
-- one template looks it up once, and the globals used per event are locals.
local redis_call, redis_pcall = redis.call, redis.pcall
local unpack, tonumber, type = unpack, tonumber, type
local ARGV = ARGV
local stream, record_key, batch_arg = KEYS[1], KEYS[2], ARGV[2]
local n = tonumber(ARGV[4])
local batch = tonumber(batch_arg)

-- The record describes this producer's last batch that reached Redis:
-- "<batch no> <first id> <last id>" when it was written, "<batch no> ! <error>"
-- when Redis refused it. A producer has one batch in flight and numbers its
-- batches upwards, so an attempt numbered below the record is stale: its batch
-- was written already, or its caller was told it failed. An attempt with the
-- record's number is a retry: answer with what the first attempt did. Checked
-- on every call, since an attempt that timed out may arrive after its retry, or
-- after later batches. A record numbered below this batch (the usual case: the
-- batch before) changes nothing, so only its number is read; a record of
-- neither form counts as none.
local record = redis_call('GET', record_key)
local recorded = record and tonumber(string.match(record, '^(%d+) '))
if recorded and recorded >= batch then
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
    local entries = redis_call('XRANGE', stream, first, last)
    local ids = {}
    for i = 1, #entries do ids[i] = entries[i][1] end
    return {1, ids}
  end
end

-- Each template as the tails of its XADD and its HSET, which every event of
-- the template fills in: META holds the M metadata strings, 't' and a slot for
-- the producer time (SIZE slots in all), then room for an event's extra
-- metadata; HASH holds the F payload field names, each followed by a slot for
-- its value. A table made by {unpack(ARGV, i, j)} has its final size at once;
-- every slot that matters is overwritten.
--
-- Operation versions a newer contract retired are refused before anything is
-- written; deprecated ones are written and reported. Marks only ever go up
-- (versions.lua), so a retry of a refused batch is refused again. A template's
-- metadata starts o, name, v, version, c, contract (writer.py). A marks key
-- someone overwrote with another type marks nothing.
local prefix, ttl, marks, RETIRED = ARGV[1], ARGV[3], KEYS[3], 4
local templates, deprecated = {}, {}
local pos = 6
-- A negative count (-1) is one template whose events are all of the short
-- form: producer time and values (see the header).
local template_count = tonumber(ARGV[5])
local uniform = template_count < 0
if uniform then template_count = -template_count end
for t = 1, template_count do
  local m = tonumber(ARGV[pos])
  local meta = {unpack(ARGV, pos + 1, pos + m + 2)}
  meta[m + 1] = 't'
  pos = pos + m + 1
  local f = tonumber(ARGV[pos])
  local hash = {unpack(ARGV, pos + 1, pos + 2 * f)}
  for j = 1, f do hash[2 * j - 1] = ARGV[pos + j] end
  pos = pos + f + 1
  templates[t] = {meta, m + 2, hash, f}
  if marks then
    local mark = meta[6] .. '.' .. meta[2] .. ':' .. meta[4]
    local status = redis_pcall('HGET', marks, mark)
    if status == 'retired' then return {RETIRED, mark} end
    if status == 'deprecated' then deprecated[#deprecated + 1] = mark end
  end
end

-- The entries and payload hashes, in turn. The first refusal stops the loop
-- with the error and the number of entries and of hashes written before it.
local ids = {}
local err, entries, hashes_written
local number, meta, size, hash, f
if uniform then
  local template = templates[1]
  meta, size, hash, f = template[1], template[2], template[3], template[4]
end
for i = 1, n do
  -- VALUES: where the event's payload values start.
  local x, values = 0, pos + 1
  if uniform then
    meta[size] = ARGV[pos]
  else
    if ARGV[pos] ~= number then
      number = ARGV[pos]
      local template = templates[tonumber(number)]
      meta, size, hash, f = template[1], template[2], template[3], template[4]
    end
    meta[size] = ARGV[pos + 1]
    if ARGV[pos + 2] ~= '0' then
      x = tonumber(ARGV[pos + 2])
      for j = 1, x do meta[size + j] = ARGV[pos + 2 + j] end
    end
    values = pos + 3 + x
  end
  local added = redis_pcall('XADD', stream, '*', unpack(meta, 1, size + x))
  if type(added) == 'table' and added.err then
    err, entries, hashes_written = added.err, i - 1, i - 1
    break
  end
  ids[i] = added
  if f > 0 then
    for j = 1, f do hash[2 * j] = ARGV[values + j - 1] end
    -- A new key's HSET answers F, its number of fields: only another answer
    -- needs a closer look.
    local written = redis_pcall('HSET', prefix .. added, unpack(hash, 1, 2 * f))
    if written ~= f and type(written) == 'table' and written.err then
      err, entries, hashes_written = written.err, i, i - 1
      break
    end
  end
  pos = values + f
end

-- Refused: undo the entries and payload hashes written, and record the
-- refusal, so that a late attempt of this batch writes nothing either.
if err then
  for j = 1, entries do
    redis_call('XDEL', stream, ids[j])
  end
  for j = 1, hashes_written do
    redis_call('DEL', prefix .. ids[j])
  end
  redis_pcall('SET', record_key, batch_arg .. ' ! ' .. tostring(err), 'PX', ttl)
  return redis.error_reply(err)
end

if n > 0 then
  redis_call('SET', record_key, batch_arg .. ' ' .. ids[1] .. ' ' .. ids[n], 'PX', ttl)
  if string.find(stream, '#', 1, true) then
    redis_pcall('SPUBLISH', stream .. ':bell', ids[n])
  end
end
return {0, ids, deprecated}
