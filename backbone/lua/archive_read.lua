-- Read entries of the archive's consumer group with their whole payloads, in
-- one call: new entries (XREADGROUP >), this consumer's own pending entries
-- (XREADGROUP after an id) or entries idle with other consumers (XAUTOCLAIM).
-- Each payload is read with HGETALL under redis.pcall, so a key of another type
-- fails that entry alone. For an aggregate's event (field a) the script also
-- finds its version: its position in the aggregate's index plus one.
--
-- KEYS[1]  stream
-- ARGV[1]  group
-- ARGV[2]  consumer
-- ARGV[3]  COUNT
-- ARGV[4]  mode: "new", "own" or "claim"
-- ARGV[5]  "own": the id to read after ("0" at first); "claim": the XAUTOCLAIM
--          cursor ("0-0" at first)
-- ARGV[6]  claim: min idle time in milliseconds
-- ARGV[7]  payload key prefix ("<stream>:p:")
-- ARGV[8]  aggregate index prefix ("<stream>:agg:")
--
-- Returns {head, id, fields, payload, version, ...} (4 per entry). HEAD: for
-- "new" with nothing new, the stream's last entry id ("0-0" when empty) and no
-- entries; for "claim" the next cursor; else false. FIELDS is the entry's flat
-- field/value list, false for a pending entry deleted meanwhile. PAYLOAD is
-- HGETALL's flat list (empty when the key does not exist) or, when the key
-- cannot be read as a hash, the error's text. VERSION is a number or false.
local mode = ARGV[4]
local entries
local head = false
if mode == 'claim' then
  local claimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[6],
    ARGV[5], 'COUNT', ARGV[3])
  head = claimed[1]
  entries = claimed[2]
else
  local from = '>'
  if mode == 'own' then from = ARGV[5] end
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT',
    ARGV[3], 'STREAMS', KEYS[1], from)
  entries = nil
  if reply then
    -- Redis answers {{stream, entries}}; some emulations answer {stream, entries}.
    if type(reply[1]) == 'table' then entries = reply[1][2] else entries = reply[2] end
  end
  entries = entries or {}
  if mode == 'new' and #entries == 0 then
    local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
    if #last == 0 then return {'0-0'} end
    return {last[1][1]}
  end
end

-- Entry ids compare as two numbers of any length: by length, then as text.
local function before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if not am or not bm then return a < b end
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  if #as ~= #bs then return #as < #bs end
  return as < bs
end

-- The aggregate's index lists its entry ids in stream order (append.lua), so a
-- binary search finds one; the next event of the same aggregate in this call
-- is usually right after the last one found.
local found = {}
local function version_of(aggregate, id)
  local key = ARGV[8] .. aggregate
  local guess = found[aggregate]
  if guess then
    local at = redis.pcall('LINDEX', key, guess)
    if at == id then
      found[aggregate] = guess + 1
      return guess + 1
    end
  end
  local size = redis.pcall('LLEN', key)
  if type(size) ~= 'number' then return false end
  local low, high = 0, size - 1
  while low <= high do
    local middle = math.floor((low + high) / 2)
    local at = redis.pcall('LINDEX', key, middle)
    if type(at) ~= 'string' then return false end
    if at == id then
      found[aggregate] = middle + 1
      return middle + 1
    end
    if before(at, id) then low = middle + 1 else high = middle - 1 end
  end
  return false
end

local out = {head}
for i = 1, #entries do
  local id, fields = entries[i][1], entries[i][2]
  local payload = {}
  local version = false
  if fields then
    local got = redis.pcall('HGETALL', ARGV[7] .. id)
    if type(got) == 'table' and got.err then
      payload = got.err
    else
      payload = got
    end
    local aggregate, origin
    for j = 1, #fields, 2 do
      if fields[j] == 'a' then aggregate = fields[j + 1] end
      if fields[j] == 'ri' then origin = fields[j + 1] end
    end
    if aggregate then version = version_of(aggregate, origin or id) end
  else
    fields = false
  end
  out[#out + 1] = id
  out[#out + 1] = fields
  out[#out + 1] = payload
  out[#out + 1] = version
end
return out
