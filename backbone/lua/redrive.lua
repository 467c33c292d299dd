-- Re-drive one dead letter: append its event again to the stream, for its group
-- only, with a copy of its payload; then delete the dead letter and its copy.
--
-- KEYS[1]  stream
-- KEYS[2]  dead-letter stream
-- KEYS[3]  payload copy of the dead letter
-- ARGV[1]  dead letter id
-- ARGV[2]  payload key prefix ("<stream>:p:")
--
-- A re-drive into a partition (a stream key with '#') rings its doorbell, as
-- publish.lua does, so that the partition's readers take it at once.
--
-- Returns the new entry id, or false when the dead letter does not exist.
local found = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])
if #found == 0 then
  return false
end
local fields = found[1][2]
local meta = {}
local group, origin, original = nil, nil, nil
for i = 1, #fields, 2 do
  local name, value = fields[i], fields[i + 1]
  if name == 'g' then
    group = value
  elseif name == 'id' then
    origin = value
  elseif string.sub(name, 1, 2) == 'm:' then
    local key = string.sub(name, 3)
    if key == 'ri' then
      original = value
    elseif key ~= 'rg' then
      meta[#meta + 1] = key
      meta[#meta + 1] = value
    end
  end
end
meta[#meta + 1] = 'rg'
meta[#meta + 1] = group or ''
meta[#meta + 1] = 'ri'
meta[#meta + 1] = original or origin or ''
local id = redis.call('XADD', KEYS[1], '*', unpack(meta))
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('COPY', KEYS[3], ARGV[2] .. id, 'REPLACE')
  redis.call('DEL', KEYS[3])
end
redis.call('XDEL', KEYS[2], ARGV[1])
if string.find(KEYS[1], '#', 1, true) then
  redis.pcall('SPUBLISH', KEYS[1] .. ':bell', id)
end
return id
