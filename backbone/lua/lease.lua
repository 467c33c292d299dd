-- A partition's lease for one consumer group (an ordered subscription): which
-- member may read, acknowledge, retry, mark and dead-letter the partition's
-- events, fenced by a token that only grows. Every key is in the partition's
-- hash tag, so each call is one slot.
--
-- KEYS[1]  the lease: the string "<token> <owner>" (the FENCE), with a time to
--          live; gone when free or expired
-- KEYS[2]  depends on the operation (below)
-- ARGV[1]  the operation
--
-- acquire  KEYS[2] the fencing counter (an integer that never expires);
--          ARGV[2] owner, ARGV[3] time to live (ms). When the lease is free, or
--          held by OWNER itself (whose earlier holding is over): the counter
--          grows, the lease is set to "<new token> <owner>" for the time to
--          live; returns {token}. Held by another: {0, its fence, its ms left}.
--          A missing counter starts at the server's time in microseconds, so
--          tokens keep growing when Redis loses its data (unless the server's
--          clock went back by more than the tokens taken since).
-- renew    ARGV[2] fence, ARGV[3] time to live (ms): 1 when the lease is still
--          FENCE (its time to live set again), else 0.
-- release  ARGV[2] fence: 1 when the lease was FENCE and is deleted, else 0.
--
-- The fenced operations below first check that the lease is exactly ARGV[2]
-- (the fence); when it is not (expired, or another member's since) they change
-- nothing and fail with an error starting "FENCED":
--
-- ack      KEYS[2] stream; ARGV[3] group, ARGV[4..] entry ids: XACK; returns
--          how many were pending.
-- claim    KEYS[2] stream; ARGV[3] group, ARGV[4] consumer, ARGV[5..] entry
--          ids: XCLAIM to CONSUMER with no minimum idle time (whichever
--          consumer had them); returns XCLAIM's entries {id, fields}.
-- retry    KEYS[2] stream; ARGV[3] group, ARGV[4] consumer, ARGV[5] entry id,
--          ARGV[6] delivery count: XCLAIM ... RETRYCOUNT JUSTID (a retry is a
--          delivery); returns the ids claimed (empty: no longer pending).
-- mark     KEYS[2] the group's idempotency marks; ARGV[3] score, ARGV[4] the
--          event id: ZADD; returns 1.
local op = ARGV[1]

if op == 'acquire' then
  local current = redis.call('GET', KEYS[1])
  if current then
    local owner = string.match(current, '^%d+ (.+)$')
    if owner ~= ARGV[2] then
      return {0, current, redis.call('PTTL', KEYS[1])}
    end
  end
  if redis.call('EXISTS', KEYS[2]) == 0 then
    -- No counter: the first holding ever, or Redis lost its data. Seeded from
    -- the server's clock (microseconds since the epoch, built as text: a Lua
    -- number would print it rounded), tokens keep growing across a loss.
    local now = redis.call('TIME')
    redis.call('SET', KEYS[2], now[1] .. string.format('%06d', tonumber(now[2])),
      'NX')
  end
  redis.call('INCR', KEYS[2])
  -- As text: Lua would print a number this large rounded ("1.7e+15").
  local token = redis.call('GET', KEYS[2])
  redis.call('SET', KEYS[1], token .. ' ' .. ARGV[2], 'PX', ARGV[3])
  return {token}
end

local held = redis.call('GET', KEYS[1]) == ARGV[2]

if op == 'renew' then
  if not held then return 0 end
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end

if op == 'release' then
  if not held then return 0 end
  redis.call('DEL', KEYS[1])
  return 1
end

if not held then
  return redis.error_reply('FENCED the lease ' .. KEYS[1] .. ' is no longer "' ..
    ARGV[2] .. '"; another member holds the partition or it expired')
end

if op == 'ack' then
  local acked = 0
  for first = 4, #ARGV, 4000 do
    acked = acked + redis.call('XACK', KEYS[2], ARGV[3],
      unpack(ARGV, first, math.min(first + 3999, #ARGV)))
  end
  return acked
end

if op == 'claim' then
  local out = {}
  for first = 5, #ARGV, 4000 do
    local claimed = redis.call('XCLAIM', KEYS[2], ARGV[3], ARGV[4], 0,
      unpack(ARGV, first, math.min(first + 3999, #ARGV)))
    for _, entry in ipairs(claimed) do out[#out + 1] = entry end
  end
  return out
end

if op == 'retry' then
  return redis.call('XCLAIM', KEYS[2], ARGV[3], ARGV[4], 0, ARGV[5],
    'RETRYCOUNT', ARGV[6], 'JUSTID')
end

if op == 'mark' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
  return 1
end

return redis.error_reply('ERR lease.lua has no operation "' .. tostring(op) .. '"')
