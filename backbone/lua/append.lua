-- Append events of ONE aggregate, if its version is the one expected: for each
-- event, one stream entry (metadata, with the aggregate id) and one payload hash
-- keyed by the entry id, exactly as publish.lua writes them, and the entry ids
-- at the end of the aggregate's index. All of it is written, or none of it.
--
-- KEYS[1]  stream
-- KEYS[2]  the aggregate's index: a list of entry ids, the event of version V
--          at position V - 1 (so the aggregate's version is LLEN)
-- KEYS[3]  the appender's batch record (dedupe of retried and late attempts)
-- KEYS[4]  the stream's operation-version marks (optional; see versions.lua)
-- ARGV[1]  expected version: "any", "new" (no events yet), "exists" (at least
--          one event) or a number N (exactly N events; 0 is the same as "new")
-- ARGV[2]  aggregate id (written into each entry as field "a")
-- ARGV[3..] as publish.lua's ARGV[1..]: payload key prefix, batch number,
--          batch record time to live (ms), number of events N, number of
--          templates T and the templates, then the N events (T = -1: one
--          template and the short form of each event)
--
-- Rings a partition's doorbell after writing, as publish.lua does: SPUBLISH on
-- "<stream>:bell" with the last entry id when the stream key names a partition
-- (has '#'); through pcall; not on a retry.
--
-- Returns {status, detail, version}:
--   {0, {entry id, ...}, version, {deprecated "op:version", ...}}
--                                  written now; VERSION is the aggregate's new
--                                  version (that of the last event)
--   {1, {entry id, ...}, version}  an earlier attempt of this batch wrote these
--   {2, error text}                Redis refused an earlier attempt of this batch
--   {3, batch number}              stale: a later batch of this appender was
--                                  recorded
--   {4, actual version}            the version was not the one expected (now,
--                                  or when an earlier attempt of this batch ran)
--   {5, "op:version"}              that operation version is retired
-- and nothing is written unless the status is 0.
--
-- Built as publish.lua is, for the server's cost: argument tables once per
-- template, only their slots overwritten per event.
local redis_call, redis_pcall = redis.call, redis.pcall
local unpack, tonumber, type = unpack, tonumber, type
local ARGV = ARGV
local stream, index, record_key = KEYS[1], KEYS[2], KEYS[3]
local expected, aggregate = ARGV[1], ARGV[2]
local prefix, batch_arg, ttl = ARGV[3], ARGV[4], ARGV[5]
local batch = tonumber(batch_arg)
local n = tonumber(ARGV[6])

-- The record: "<batch no> <first id> <last id> <version>" when written,
-- "<batch no> ! <error>" when refused, "<batch no> ? <actual version>" on a
-- conflict (so that a late attempt of a batch whose caller was told of the
-- conflict cannot write it after all). Checked first, as in publish.lua: a retry
-- of a batch that was written must get its ids back, not a conflict.
local record = redis_call('GET', record_key)
if record then
  local seq_text = string.match(record, '^(%d+) ')
  local seq = tonumber(seq_text)
  if seq ~= nil and batch < seq then
    return {3, seq_text}
  end
  if seq == batch then
    local refused = string.match(record, '^%d+ ! (.*)$')
    if refused then return {2, refused} end
    local actual = string.match(record, '^%d+ %? (%d+)$')
    if actual then return {4, tonumber(actual)} end
    local first, last, version = string.match(record, '^%d+ (%S+) (%S+) (%d+)$')
    local entries = redis_call('XRANGE', stream, first, last)
    local ids = {}
    for i = 1, #entries do ids[i] = entries[i][1] end
    return {1, ids, tonumber(version)}
  end
end

-- Each template as the tails of its XADD and its HSET, as in publish.lua: META
-- holds the M metadata strings, 'a' and the aggregate id, 't' and a slot for
-- the producer time (SIZE slots in all), then room for an event's extra
-- metadata; HASH holds the F payload field names, each followed by a slot for
-- its value.
--
-- Operation versions a newer contract retired are refused before anything is
-- written; deprecated ones are written and reported. Marks only ever go up
-- (versions.lua), so a retry of a refused batch is refused again. A template's
-- metadata starts o, name, v, version, c, contract (writer.py). A marks key
-- someone overwrote with another type marks nothing.
local marks, RETIRED = KEYS[4], 5
local templates, deprecated = {}, {}
local pos = 8
-- A negative count (-1) is one template whose events are all of the short
-- form: producer time and values (see the header).
local template_count = tonumber(ARGV[7])
local uniform = template_count < 0
if uniform then template_count = -template_count end
for t = 1, template_count do
  local m = tonumber(ARGV[pos])
  local meta = {unpack(ARGV, pos + 1, pos + m + 4)}
  meta[m + 1] = 'a'
  meta[m + 2] = aggregate
  meta[m + 3] = 't'
  pos = pos + m + 1
  local f = tonumber(ARGV[pos])
  local hash = {unpack(ARGV, pos + 1, pos + 2 * f)}
  for j = 1, f do hash[2 * j - 1] = ARGV[pos + j] end
  pos = pos + f + 1
  templates[t] = {meta, m + 4, hash, f}
  if marks then
    local mark = meta[6] .. '.' .. meta[2] .. ':' .. meta[4]
    local status = redis_pcall('HGET', marks, mark)
    if status == 'retired' then return {RETIRED, mark} end
    if status == 'deprecated' then deprecated[#deprecated + 1] = mark end
  end
end

-- The aggregate's version. A refusal (the index is not a list) is recorded as
-- any other, and nothing is written.
local current = redis_pcall('LLEN', index)
if type(current) == 'table' and current.err then
  redis_pcall('SET', record_key, batch_arg .. ' ! ' .. tostring(current.err), 'PX', ttl)
  return redis.error_reply(current.err)
end
local ok
if expected == 'any' then
  ok = true
elseif expected == 'new' then
  ok = current == 0
elseif expected == 'exists' then
  ok = current > 0
else
  ok = current == tonumber(expected)
end
if not ok then
  redis_pcall('SET', record_key, batch_arg .. ' ? ' .. current, 'PX', ttl)
  return {4, current}
end

-- The entries and payload hashes, in turn, as in publish.lua. The first
-- refusal stops the loop with the error and the number of entries and of
-- hashes written before it.
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

-- Then the index; LLEN found a list, so only a refused write (out of memory)
-- fails: the index is put back as it was, and the entries are undone.
if not err then
  for first = 1, n, 4000 do
    local pushed = redis_pcall('RPUSH', index, unpack(ids, first, math.min(first + 3999, n)))
    if type(pushed) == 'table' and pushed.err then
      if current == 0 then
        redis_call('DEL', index)
      else
        redis_call('LTRIM', index, 0, current - 1)
      end
      err, entries, hashes_written = pushed.err, n, n
      break
    end
  end
end

-- Refused: undo the entries and payload hashes written, and record the
-- refusal.
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
if n == 0 then
  return {0, ids, current, deprecated}
end
local version = current + n
redis_call('SET', record_key, batch_arg .. ' ' .. ids[1] .. ' ' .. ids[n] .. ' ' .. version, 'PX', ttl)
if string.find(stream, '#', 1, true) then
  redis_pcall('SPUBLISH', stream .. ':bell', ids[n])
end
return {0, ids, version, deprecated}
