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
--          templates T and the templates, then the N events
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
local record = redis.call('GET', record_key)
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
    local entries = redis.call('XRANGE', stream, first, last)
    local ids = {}
    for i = 1, #entries do ids[i] = entries[i][1] end
    return {1, ids, tonumber(version)}
  end
end

local function refuse(err)
  redis.pcall('SET', record_key, batch_arg .. ' ! ' .. tostring(err), 'PX', ttl)
  return redis.error_reply(err)
end

local metas, hashes, widths = {}, {}, {}
local pos = 8
for t = 1, tonumber(ARGV[7]) do
  local m = tonumber(ARGV[pos])
  local meta = {}
  for j = 1, m do meta[j] = ARGV[pos + j] end
  meta[m + 1] = 'a'
  meta[m + 2] = aggregate
  meta[m + 3] = 't'
  meta[m + 4] = ''
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
local MARKS, RETIRED = KEYS[4], 5

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

local current = redis.pcall('LLEN', index)
if type(current) == 'table' and current.err then
  return refuse(current.err)
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
  redis.pcall('SET', record_key, batch_arg .. ' ? ' .. current, 'PX', ttl)
  return {4, current}
end


local ids = {}

-- Undo the first ENTRIES stream entries and the first HASHES payload hashes,
-- and record the refusal.
local function rollback(entries, hashes_written, err)
  for j = 1, entries do
    redis.call('XDEL', stream, ids[j])
  end
  for j = 1, hashes_written do
    redis.call('DEL', prefix .. ids[j])
  end
  return refuse(err)
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

if n == 0 then
  return {0, ids, current, deprecated}
end
for first = 1, n, 4000 do
  local pushed = redis.pcall('RPUSH', index, unpack(ids, first, math.min(first + 3999, n)))
  if type(pushed) == 'table' and pushed.err then
    -- LLEN found a list, so only a refused write (out of memory) gets here:
    -- put the index back as it was, then undo the entries.
    if current == 0 then
      redis.call('DEL', index)
    else
      redis.call('LTRIM', index, 0, current - 1)
    end
    return rollback(n, n, pushed.err)
  end
end
local version = current + n
redis.call('SET', record_key, batch_arg .. ' ' .. ids[1] .. ' ' .. ids[n] .. ' ' .. version, 'PX', ttl)
if string.find(stream, '#', 1, true) then
  redis.pcall('SPUBLISH', stream .. ':bell', ids[n])
end
return {0, ids, version, deprecated}
