-- Store an aggregate's snapshot, unless the one stored is of a later version
-- (a slow writer never replaces a newer snapshot with an older one).
--
-- KEYS[1]  the snapshot hash: v (aggregate version), s (state schema version),
--          d (the state, msgpack)
-- ARGV[1]  version, ARGV[2] schema version, ARGV[3] data
--
-- Returns 1 when stored, 0 when a snapshot of a later version is there.
-- A snapshot of another schema version is replaced whatever its version: it
-- cannot be read by the code writing this one.
local stored = redis.pcall('HMGET', KEYS[1], 'v', 's')
if type(stored) == 'table' and not stored.err then
  local version = tonumber(stored[1])
  if version ~= nil and stored[2] == ARGV[2] and version > tonumber(ARGV[1]) then
    return 0
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 's', ARGV[2], 'd', ARGV[3])
return 1
