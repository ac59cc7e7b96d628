import { LuaScript } from './redis.js'
import { EMIT_FUNCTIONS, sharded } from './streams-redis.js'

/**
 * The presence scripts on a Redis Cluster, each on ONE slot (see PresenceKeys): a chat room's decision
 * with its user_connected/user_disconnected on the chat's slot (SPUBLISH on the chat's shard channel),
 * customer_presence on each console stream's slot apart, a node's heartbeat and sweep on the node's
 * slot, console sessions on `{consoles}`. ShardedWrites and ShardedPresenceNode order the steps.
 */

/** How long a room's latest decision, and what a console stream last appended of it, are kept. */
export const DECISION_TTL_MS = 24 * 3600 * 1000
/** A sweeper renews its lease after each batch; one that died is replaced once it expires. */
export const SWEEP_LEASE_MS = 10_000
/** HEARTBEAT_NODE: a survivor is sweeping this node now. */
export const SWEEPING = 3
/** CLAIM_SWEEP and FINISH_SWEEP answers. */
export const CLAIMED = 1
export const ALREADY_SWEPT = -1
export const FINISHED = 1
export const LEASE_LOST = -1

/**
 * A customer's decisions in a room are numbered (decisions hash: user key → `<seq>:<1|0>`) so a console
 * stream can tell the latest from a late one. The number is the master's clock in µs, or one more than
 * the last: it keeps growing after the hash expired or a failover lost its last writes.
 */
const DECIDE_FUNCTIONS = `
local function decide (decisions, user, online, ttl)
  local now = redis.call('TIME')
  local seq = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local last = redis.call('HGET', decisions, user)
  if last then
    local previous = tonumber(string.match(last, '^(%d+)'))
    if previous >= seq then seq = previous + 1 end
  end
  -- %.0f: Lua's own formatting of a 16-digit number would round it.
  local decision = string.format('%.0f', seq) .. ':' .. online
  redis.call('HSET', decisions, user, decision)
  redis.call('PEXPIRE', decisions, ttl)
  return decision
end
local function latest (decisions, user)
  if not decisions then return '' end
  return redis.call('HGET', decisions, user) or ''
end`

/**
 * JOIN without the node's hash. KEYS: the user's room set and, for a customer, its chat's customer index
 * and decisions hash. ARGV: socket id, holding, cap (-1: none), 'force' or '', user key, decision TTL,
 * then channel and packet pairs of user_connected, published as JOIN does. Returns the outcome (as JOIN)
 * and the user's latest decision ('' when none).
 */
export const JOIN_ROOM = new LuaScript(`${DECIDE_FUNCTIONS}
local added = 0
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  local cap = tonumber(ARGV[3])
  if cap >= 0 and redis.call('SCARD', KEYS[1]) >= cap then return {0, ''} end
  added = redis.call('SADD', KEYS[1], ARGV[1])
end
if KEYS[2] then redis.call('HSET', KEYS[2], KEYS[1], ARGV[2]) end
if (added == 0 and ARGV[4] ~= 'force') or redis.call('SCARD', KEYS[1]) > 1 then return {1, latest(KEYS[3], ARGV[5])} end
for i = 7, #ARGV, 2 do redis.call('SPUBLISH', ARGV[i], ARGV[i + 1]) end
if not KEYS[3] then return {2, ''} end
return {2, decide(KEYS[3], ARGV[5], '1', ARGV[6])}`)

/**
 * LEAVE without the node's hash. KEYS as JOIN_ROOM. ARGV: socket id, 'force' or '', user key, decision
 * TTL, then the user_disconnected pairs, published as LEAVE does. Returns 1 when it announced (else 0) and
 * the user's latest decision.
 */
export const LEAVE_ROOM = new LuaScript(`${DECIDE_FUNCTIONS}
local removed = redis.call('SREM', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, latest(KEYS[3], ARGV[3])} end
if KEYS[2] then redis.call('HDEL', KEYS[2], KEYS[1]) end
if removed == 0 and ARGV[2] ~= 'force' then return {0, latest(KEYS[3], ARGV[3])} end
for i = 5, #ARGV, 2 do redis.call('SPUBLISH', ARGV[i], ARGV[i + 1]) end
if not KEYS[3] then return {1, ''} end
return {1, decide(KEYS[3], ARGV[3], '0', ARGV[4])}`)

/**
 * customer_presence into one console stream, only when it is news: a decision newer than the last one
 * this stream heard of, whose state differs from the last one it appended. Two nodes racing, a retry, a
 * sweeper telling again what a dead node may not have: the stream still alternates, ending in the
 * latest state. KEYS: the room's last decision for this stream, the stream's history and position.
 * ARGV: decision, its TTL, channel, the durable argument (RedisStreams.durableArgument). 1: appended.
 */
export const APPEND_CUSTOMER_PRESENCE = new LuaScript(sharded(`${EMIT_FUNCTIONS}
local seq, online = string.match(ARGV[1], '^(%d+):(%d)$')
local last = redis.call('GET', KEYS[1])
local last_seq, last_online
if last then last_seq, last_online = string.match(last, '^(%d+):(%d)$') end
if last_seq and tonumber(last_seq) >= tonumber(seq) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if last_online == online then return 0 end
emit(ARGV[3], ARGV[4])
return 1`))

/** ADD_SESSION without the node's hash. KEYS: the operator's console set, the sessions hash. ARGV: id, session, cap. */
export const ADD_SESSION_SHARDED = new LuaScript(`
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  local cap = tonumber(ARGV[3])
  if cap >= 0 and redis.call('SCARD', KEYS[1]) >= cap then return 0 end
  redis.call('SADD', KEYS[1], ARGV[1])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1`)

export const REMOVE_SESSION_SHARDED = new LuaScript(`
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1`)

/**
 * HEARTBEAT without the nodes set. KEYS: the node's key, its swept marker, its sweep lease. ARGV: TTL.
 * While a survivor sweeps the node its key stays gone (SWEEPING): a write-back now would race the sweep.
 */
export const HEARTBEAT_NODE = new LuaScript(`
local existed = redis.call('EXISTS', KEYS[1])
if existed == 0 and redis.call('EXISTS', KEYS[3]) == 1 then return 3 end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
if existed == 1 then return 1 end
if redis.call('DEL', KEYS[2]) == 1 then return 2 end
return 0`)

/**
 * Takes (or renews) the lease on sweeping a node. KEYS: its key, swept marker, lease. ARGV: 'dead' (only
 * while its key is gone, it is not swept and no other sweeper holds it) or 'self', sweeper id, lease ms.
 * CLAIMED, 0 (not now), ALREADY_SWEPT.
 */
export const CLAIM_SWEEP = new LuaScript(`
if ARGV[1] == 'dead' then
  if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
  if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
  local holder = redis.call('GET', KEYS[3])
  if holder and holder ~= ARGV[2] then return 0 end
end
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
return 1`)

/**
 * Ends a sweep once the node's hash is empty. KEYS: its key, sockets hash, swept marker, lease. ARGV: mode,
 * sweeper id, marker TTL. FINISHED; 0: sockets were written meanwhile (sweep them too); LEASE_LOST.
 */
export const FINISH_SWEEP = new LuaScript(`
if redis.call('GET', KEYS[4]) ~= ARGV[2] then return -1 end
if redis.call('HLEN', KEYS[2]) > 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
if ARGV[1] == 'dead' then redis.call('SET', KEYS[3], '1', 'PX', ARGV[3]) end
return 1`)
