-- Record a contract's operation-version marks on a stream. A mark only ever goes
-- up (none < deprecated < retired), so processes running older and newer code
-- can all record theirs in any order and the newest word stands: a process whose
-- contract has not heard of a retirement cannot undo it.
--
-- KEYS[1]  the stream's marks hash: "<contract>.<operation>:<version>" -> status
-- ARGV     pairs of field and status ("deprecated" or "retired")
--
-- Returns the number of marks raised.
local rank = {deprecated = 1, retired = 2}
local raised = 0
for i = 1, #ARGV, 2 do
  local field, status = ARGV[i], ARGV[i + 1]
  local now = redis.call('HGET', KEYS[1], field)
  if rank[status] and (rank[now] or 0) < rank[status] then
    redis.call('HSET', KEYS[1], field, status)
    raised = raised + 1
  end
end
return raised
