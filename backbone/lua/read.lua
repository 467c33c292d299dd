-- Read new entries of a consumer group together with their payload hashes, in one
-- call: XREADGROUP (without BLOCK, which scripts cannot do) and an HGETALL per
-- entry, so the client makes one round trip per batch and parses one reply.
--
-- KEYS[1]  stream
-- KEYS[2]  the group's idempotency marks (optional)
-- ARGV[1]  group
-- ARGV[2]  consumer
-- ARGV[3]  COUNT
-- ARGV[4]  "1": read with NOACK (nothing becomes pending)
-- ARGV[5]  payload key prefix ("<stream>:p:")
-- ARGV[6..] entry ids to acknowledge first (finished since the last call)
--
-- Returns {false, id, fields, payload, mark, id, fields, payload, mark, ...}, or,
-- when there is nothing new, {last entry id of the stream} (for XREAD BLOCK).
-- MARK is the entry's score in the marks (false when unmarked or unused).
for first = 6, #ARGV, 4000 do
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, first, math.min(first + 3999, #ARGV)))
end
local args = {'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3]}
if ARGV[4] == '1' then args[#args + 1] = 'NOACK' end
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
local prefix, marks = ARGV[5], KEYS[2]
local out = {false}
for _, entry in ipairs(entries) do
  local id, fields = entry[1], entry[2]
  out[#out + 1] = id
  out[#out + 1] = fields
  out[#out + 1] = redis.call('HGETALL', prefix .. id)
  local mark = false
  if marks then
    local logical = id
    for j = 1, #fields, 2 do
      if fields[j] == 'ri' then logical = fields[j + 1] end
    end
    mark = redis.call('ZSCORE', marks, logical)
  end
  out[#out + 1] = mark
end
return out
