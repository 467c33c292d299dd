-- Remove the oldest entries of a stream together with their payload keys, in
-- one atomic step, at most COUNT of them, and never one that something still
-- needs (unless forced): an entry a consumer group has not read or not
-- acknowledged, an entry a projection has not applied, an event of an
-- aggregate (an event store's history). The bound is computed here, in the
-- same step as the deletion, so a group, a read or a checkpoint that changes
-- between two calls is seen by the next one, never missed by this one.
--
-- KEYS[1]    the stream (the event stream, or its dead-letter stream)
-- KEYS[2..]  checkpoints of the stream's projections (hashes: `id` = the last
--            entry applied, `broken` = must be rebuilt)
-- ARGV[1]    "events": an entry's payload key is ARGV[2] .. entry id;
--            "dead-letters": ARGV[2] .. <field g> .. ":" .. <field id>
-- ARGV[2]    payload key prefix
-- ARGV[3]    COUNT: most entries this call removes
-- ARGV[4]    keep at most this many entries ("": no length bound)
-- ARGV[5]    remove entries older than this many milliseconds ("": no age bound)
-- ARGV[6]    "1": force: holds are reported, not applied
-- ARGV[7]    "1": dry run: count what would go, delete nothing
-- ARGV[8]    remove nothing after this entry id (the stream's last entry when a
--            run began, so a run never chases producers; "": no such limit)
-- ARGV[9]    dry run: continue after this entry id ("": from the first entry)
-- ARGV[10]   dry run: entries counted by earlier calls of the run
-- ARGV[11..] the names of the projections of KEYS[2..], in order
--
-- Returns {removed, payload keys removed, stop, stop id, age cutoff, last id,
--          last taken, first kept, kind, name, id, reason, ...}:
--   stop      "policy": every entry the bounds remove is gone (or counted);
--             "held": a hold stopped the call at `stop id`;
--             "chunk": COUNT reached, call again
--   age cutoff  the entries before "<cutoff>-0" are too old ("" without age)
--   last id   the stream's last entry id (pass it as ARGV[8] to later calls)
--   last taken  the last entry removed (dry run: counted) by this call
--   first kept  the first entry left (dry run: the first not counted)
--   then every hold: kind "group" / "projection" / "aggregates", its name,
--   the first entry it holds, why. With force, the aggregates' hold names the
--   first event of an aggregate that was removed.
local stream = KEYS[1]
local mode, prefix = ARGV[1], ARGV[2]
local count = tonumber(ARGV[3])
local force, dry = ARGV[6] == '1', ARGV[7] == '1'

local kind = redis.call('TYPE', stream)['ok']
if kind == 'none' then
  return {0, 0, 'policy', '', '', '', '', ''}
end
if kind ~= 'stream' then
  return redis.error_reply('WRONGTYPE ' .. stream .. ' holds a ' .. kind ..
    ', not a stream; it cannot be trimmed')
end

-- Entry ids compare as two numbers of up to 20 digits, beyond what a Lua
-- number holds exactly: compare their digits (Redis never writes leading zeros).
local function digits_cmp(a, b)
  if #a ~= #b then
    return #a < #b and -1 or 1
  end
  if a == b then
    return 0
  end
  return a < b and -1 or 1
end

local function id_cmp(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  local c = digits_cmp(ams, bms)
  if c ~= 0 then
    return c
  end
  return digits_cmp(aseq, bseq)
end

-- The first entry at or after START (an XRANGE start, "(" for after); nil when
-- there is none (after the largest possible id, Redis answers an error).
local function first_from(start)
  local found = redis.pcall('XRANGE', stream, start, '+', 'COUNT', 1)
  if type(found) ~= 'table' or found.err or #found == 0 then
    return nil
  end
  return found[1][1]
end

local head = first_from('-')
local tail = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
local last = tail[1] and tail[1][1] or ''
if head == nil then
  return {0, 0, 'policy', '', '', last, '', ''}
end

local holds = {}
local bound = nil
local function hold(what, name, id, reason)
  if id == nil then
    return
  end
  holds[#holds + 1] = what
  holds[#holds + 1] = name
  holds[#holds + 1] = id
  holds[#holds + 1] = reason
  if bound == nil or id_cmp(id, bound) < 0 then
    bound = id
  end
end

-- Consumer groups: entries after last-delivered-id are unread; pending ones
-- (from the oldest, XPENDING's summary) are unacknowledged.
for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  local info = {}
  for i = 1, #group, 2 do
    info[group[i]] = group[i + 1]
  end
  local name = info['name']
  local held, reason = first_from('(' .. info['last-delivered-id']), 'unread'
  if tonumber(info['pending']) > 0 then
    local oldest = redis.call('XPENDING', stream, name)[2]
    local pending = oldest and first_from(oldest)
    if pending and (held == nil or id_cmp(pending, held) < 0) then
      held, reason = pending, 'unacknowledged'
    end
  end
  hold('group', name, held, reason)
end

-- Projections: entries after the checkpoint are not applied yet. One that must
-- be rebuilt, is being rebuilt (its checkpoint just cleared) or whose
-- checkpoint is unreadable needs the whole stream.
for k = 2, #KEYS do
  local name = ARGV[9 + k]
  local saved = redis.pcall('HMGET', KEYS[k], 'id', 'broken')
  if type(saved) ~= 'table' or saved.err then
    hold('projection', name, head, 'checkpoint unreadable')
  elseif saved[2] then
    hold('projection', name, head, 'broken, to be rebuilt')
  elseif not saved[1] then
    hold('projection', name, head, 'no checkpoint: starts from the beginning')
  elseif not string.match(saved[1], '^%d+%-%d+$') or #saved[1] > 41 then
    hold('projection', name, head, 'checkpoint unreadable')
  else
    hold('projection', name, first_from('(' .. saved[1]), 'not applied yet')
  end
end

local cutoff = nil
if ARGV[5] ~= '' then
  local now = redis.call('TIME')
  local millis = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  cutoff = string.format('%.0f', math.max(millis - tonumber(ARGV[5]), 0))
end
local excess = nil
if ARGV[4] ~= '' then
  excess = redis.call('XLEN', stream) - tonumber(ARGV[4])
  if dry then
    excess = excess - tonumber(ARGV[10])
  end
end
local upto = ARGV[8] ~= '' and ARGV[8] or nil

local start = '-'
if dry and ARGV[9] ~= '' then
  start = '(' .. ARGV[9]
end
local entries = redis.call('XRANGE', stream, start, '+', 'COUNT', count)
local ids, payloads = {}, {}
local stop, stop_id, aggregate = nil, '', nil
for i, entry in ipairs(entries) do
  local id, fields = entry[1], entry[2]
  local by_length = excess ~= nil and i <= excess
  local by_age = cutoff ~= nil and digits_cmp(string.match(id, '^(%d+)'), cutoff) < 0
  if not (by_length or by_age) or (upto and id_cmp(id, upto) > 0) then
    stop, stop_id = 'policy', id
    break
  end
  if not force and bound and id_cmp(id, bound) >= 0 then
    stop, stop_id = 'held', id
    break
  end
  local values = {}
  for j = 1, #fields, 2 do
    values[fields[j]] = fields[j + 1]
  end
  if mode == 'events' and values['a'] and aggregate == nil then
    aggregate = id
    if not force then
      hold('aggregates', 'aggregates', id, 'events of an event store')
      stop, stop_id = 'held', id
      break
    end
  end
  ids[#ids + 1] = id
  if mode == 'events' then
    payloads[#payloads + 1] = prefix .. id
  elseif values['g'] and values['g'] ~= '' and values['id'] and values['id'] ~= '' then
    payloads[#payloads + 1] = prefix .. values['g'] .. ':' .. values['id']
  end
end
if force and aggregate then
  hold('aggregates', 'aggregates', aggregate, 'events of an event store')
end
if stop == nil then
  stop = #entries < count and 'policy' or 'chunk'
end

local removed, keys_removed = #ids, 0
if #payloads > 0 then
  keys_removed = redis.call(dry and 'EXISTS' or 'DEL', unpack(payloads))
end
if #ids > 0 and not dry then
  removed = redis.call('XDEL', stream, unpack(ids))
end

local kept = stop_id
if not dry then
  kept = first_from('-') or ''
end
local reply = {removed, keys_removed, stop, stop_id, cutoff or '', last, ids[#ids] or '', kept}
for _, value in ipairs(holds) do
  reply[#reply + 1] = value
end
return reply
