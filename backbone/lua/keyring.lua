-- The keyring of personal data's subjects: a key per subject, by key id (the
-- hex of the first 16 bytes of SHA-256 of a prefix and the subject; never the
-- subject itself). Erasing a subject deletes its key.
--
-- KEYS[1]  the keyring hash: key id -> 32-byte key
-- KEYS[2]  the erased subjects hash: key id -> Unix milliseconds
--
-- ARGV[1] == 'get': ARGV[2 .. n+1] key ids, ARGV[n+2 .. 2n+1] a fresh random
--   key for each (the caller's). A key id without a key gets its fresh one, so
--   concurrent callers agree on the first one written. Returns the keys, in the
--   order of the key ids.
-- ARGV[1] == 'erase': ARGV[2] key id, ARGV[3] now (Unix milliseconds). Deletes
--   the key and records the time. Returns {1, now} when a key was deleted, else
--   {0, the time of an earlier erasure or false}.
local mode = ARGV[1]
if mode == 'get' then
  -- One HGET per id rather than one HMGET: no limit on a batch's subjects.
  local n = (#ARGV - 1) / 2
  local keys = {}
  for i = 1, n do
    local key = redis.call('HGET', KEYS[1], ARGV[1 + i])
    if not key then
      key = ARGV[1 + n + i]
      redis.call('HSET', KEYS[1], ARGV[1 + i], key)
    end
    keys[i] = key
  end
  return keys
end
if mode == 'erase' then
  if redis.call('HDEL', KEYS[1], ARGV[2]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
    return {1, ARGV[3]}
  end
  return {0, redis.call('HGET', KEYS[2], ARGV[2])}
end
return redis.error_reply('keyring.lua: unknown mode ' .. tostring(mode))
