/**
 * The job state machine's Lua scripts: each one atomic step in Redis (see JobStore).
 */

export const TRANSITION = `
-- KEYS: job, pending reviews, callback outbox, audit stream, the model's pending reviews
-- ARGV: allowed states (comma list), new state, now, pending op (add|rem|none), outbox member or '', audit json or '',
--       audit stream length cap, then field/value pairs (a field named '+name' is incremented by its value)
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, ''} end
local allowed = false
for s in string.gmatch(ARGV[1], '[^,]+') do if s == state then allowed = true end end
if not allowed then return {0, state} end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'updatedAt', ARGV[3])
for i = 8, #ARGV, 2 do
  if string.sub(ARGV[i], 1, 1) == '+' then
    redis.call('HINCRBY', KEYS[1], string.sub(ARGV[i], 2), tonumber(ARGV[i + 1]))
  else
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
local id = redis.call('HGET', KEYS[1], 'id')
if ARGV[4] == 'add' then
  redis.call('ZADD', KEYS[2], ARGV[3], id)
  redis.call('ZADD', KEYS[5], ARGV[3], id)
end
if ARGV[4] == 'rem' then
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[5], id)
end
if ARGV[5] ~= '' then redis.call('SADD', KEYS[3], ARGV[5]) end
if ARGV[6] ~= '' then redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', 'entry', ARGV[6]) end
return {1, state}
`;

export const CLAIM = `
-- KEYS: job; ARGV: now. Takes a queued (or stalled running) job: running, started now, one more attempt.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, ''} end
if state ~= 'queued' and state ~= 'running' then return {0, state} end
redis.call('HSET', KEYS[1], 'state', 'running', 'updatedAt', ARGV[1], 'startedAt', ARGV[1])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
return {1, redis.call('HGETALL', KEYS[1])}
`;

export const CREATE = `
-- KEYS: idempotency key, job; ARGV: job id, request hash, ttl seconds, then field/value pairs
local existing = redis.call('GET', KEYS[1])
if existing then return {0, existing} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('HSET', KEYS[2], unpack(ARGV, 4))
return {1, ARGV[1]}
`;
