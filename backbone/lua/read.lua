-- Read new entries of a consumer group together with their payloads, in one call:
-- XACK of what the consumer finished, XREADGROUP (without BLOCK, which scripts
-- cannot do) and an HMGET of each payload's fields in parameter order, so the
-- client makes one round trip per batch, parses one reply, and decodes values
-- without building dictionaries.
--
-- KEYS[1]  stream
-- KEYS[2]  the group's idempotency marks (optional)
-- KEYS[last] (fenced only) the partition's lease, see lease.lua
-- ARGV[1]  group
-- ARGV[2]  consumer
-- ARGV[3]  COUNT
-- ARGV[4]  "1": read with NOACK (nothing becomes pending), else "0". Fenced
--          (an ordered subscription): followed by a space and the fence
--          "<token> <owner>"; then nothing is acked or read unless the last
--          KEY holds exactly that fence, and the call fails with an error
--          starting "FENCED"
-- ARGV[5]  payload key prefix ("<stream>:p:")
-- ARGV[6]  number K of operations this consumer knows, then K times:
--            operation name, its version, F, F payload field names in
--            parameter order
-- then     entry ids to acknowledge first (finished since the last call)
--
-- Returns {false, id, op, rg, fields, values, mark, v, ...} (7 per entry): OP,
-- RG and V are the entry's operation, re-drive group and operation version
-- (false when absent), FIELDS its flat field/value list, VALUES the payload
-- values (false for an operation not in the list, false items for missing
-- fields; a string, the error's text, when the payload key cannot be read as a
-- hash), MARK its idempotency score or false (also when the marks key cannot be
-- read). An entry of ANOTHER version than the consumer's (V a whole number
-- other than it; no V counts as 1) gets its whole payload instead, HGETALL's
-- flat field/value list: an older one's fields may have other names (for the
-- consumer's upcasters), and a newer one's too (so that a hash none of whose
-- fields the consumer knows is told from a missing one). With nothing new it
-- returns {last entry id of the stream}, for XREAD.
local mode, marks = ARGV[4], KEYS[2]
if #mode > 1 then
  local fence = string.sub(mode, 3)
  if redis.call('GET', KEYS[#KEYS]) ~= fence then
    return redis.error_reply('FENCED the lease ' .. KEYS[#KEYS] .. ' is no longer "' ..
      fence .. '"; another member holds the partition or it expired')
  end
  mode = string.sub(mode, 1, 1)
  if #KEYS < 3 then marks = nil end
end
local known = {}
local pos = 7
local versions = {}
for k = 1, tonumber(ARGV[6]) do
  local name, f = ARGV[pos], tonumber(ARGV[pos + 2])
  local names = {}
  for j = 1, f do names[j] = ARGV[pos + 2 + j] end
  known[name] = names
  versions[name] = tonumber(ARGV[pos + 1])
  pos = pos + 3 + f
end
for first = pos, #ARGV, 4000 do
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, first, math.min(first + 3999, #ARGV)))
end

local args = {'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3]}
if mode == '1' then args[#args + 1] = 'NOACK' end
args[#args + 1] = 'STREAMS'
args[#args + 1] = KEYS[1]
args[#args + 1] = '>'
local reply = redis.call('XREADGROUP', unpack(args))
local entries = nil
if reply then
  -- Redis answers {{stream, entries}}; some emulations answer {stream, entries}.
  if type(reply[1]) == 'table' then entries = reply[1][2] else entries = reply[2] end
end
if not entries or #entries == 0 then
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last == 0 then return {'0-0'} end
  return {last[1][1]}
end

local prefix = ARGV[5]
local out = {false}
local n = 1
for _, entry in ipairs(entries) do
  local id, fields = entry[1], entry[2]
  local op, rg, ri, v = false, false, false, false
  for j = 1, #fields, 2 do
    local name = fields[j]
    if name == 'o' then op = fields[j + 1]
    elseif name == 'rg' then rg = fields[j + 1]
    elseif name == 'ri' then ri = fields[j + 1]
    elseif name == 'v' then v = fields[j + 1] end
  end
  local values = false
  local names = op and known[op]
  -- An empty re-drive group restricts nothing (no group is named '').
  if names and (not rg or rg == '' or rg == ARGV[1]) then
    -- The same rule as backbone.events.entry_version: a whole number >= 1.
    local version = 1
    if v then
      version = string.match(v, '^%d+$') and #v < 10 and tonumber(v)
      if version and version < 1 then version = false end
    end
    if version and version ~= versions[op] then
      values = redis.pcall('HGETALL', prefix .. id)
      if type(values) == 'table' and values.err then values = values.err end
    elseif #names > 0 then
      -- pcall: the key is anyone's to write; an error about it (WRONGTYPE) is
      -- about this entry alone, and is answered as its text.
      values = redis.pcall('HMGET', prefix .. id, unpack(names))
      if type(values) == 'table' and values.err then values = values.err end
    else
      values = {}
    end
  end
  local mark = false
  if marks then
    mark = redis.pcall('ZSCORE', marks, ri or id)
    if type(mark) == 'table' and mark.err then mark = false end
  end
  out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5], out[n + 6] =
    id, op, rg, fields, values, mark
  out[n + 7] = v
  n = n + 7
end
return out
