import { LuaScript } from './redis.js'
import { EMIT_FUNCTIONS } from './streams-redis.js'

/**
 * The presence scripts (see RedisPresence for the keys): each decision and its announcement in one step.
 * Announcements are emitted: customer_presence is durable and goes into its streams (streams-redis.ts).
 */

/** Write outcomes: refused by the cap, recorded, recorded and announced (first socket). */
export const REFUSED = 0
export const ANNOUNCED = 2
/** A cap that admits everything: for writes of sockets already open (retries, write-backs). */
export const NO_CAP = -1
/** HEARTBEAT answers: the key was there; gone (Redis lost it); gone because a survivor swept this node. */
export const ALIVE = 1
export const SWEPT = 2
/** A swept node's marker lives this long, so it still knows when it wakes up after a long stall. */
export const TOMBSTONE_MS = 24 * 3600 * 1000
export const BATCH = 1000

/**
 * KEYS: the user's room set, this node's sockets hash and, for a customer, its chat's customer index
 * (room key → holding: the customer is there exactly while its room set is). ARGV: socket id, holding,
 * cap (-1: none), 'force' or '', then channel and packet pairs of user_connected (a customer's with its
 * customer_presence), published when the socket is the user's first (with 'force': also when it already
 * was, as an earlier attempt may have published it to nobody).
 */
export const JOIN = new LuaScript(`${EMIT_FUNCTIONS}
local added = 0
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  local cap = tonumber(ARGV[3])
  if cap >= 0 and redis.call('SCARD', KEYS[1]) >= cap then return 0 end
  added = redis.call('SADD', KEYS[1], ARGV[1])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if KEYS[3] then redis.call('HSET', KEYS[3], KEYS[1], ARGV[2]) end
if (added == 0 and ARGV[4] ~= 'force') or redis.call('SCARD', KEYS[1]) > 1 then return 1 end
for i = 5, #ARGV, 2 do emit(ARGV[i], ARGV[i + 1]) end
return 2`)

/**
 * KEYS as JOIN. ARGV: socket id, 'force' or '', then the user_disconnected pairs (a customer's with its
 * customer_presence), published when the socket was the user's last (with 'force': whenever the room is
 * empty, as Redis may have lost the socket or an earlier attempt published to nobody). An empty room
 * leaves the customer index whatever was removed.
 */
export const LEAVE = new LuaScript(`${EMIT_FUNCTIONS}
redis.call('HDEL', KEYS[2], ARGV[1])
local removed = redis.call('SREM', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if KEYS[3] then redis.call('HDEL', KEYS[3], KEYS[1]) end
if removed == 0 and ARGV[2] ~= 'force' then return 0 end
for i = 3, #ARGV, 2 do emit(ARGV[i], ARGV[i + 1]) end
return 1`)

/** KEYS: the operator's console set, the consoles hash, this node's sockets hash. ARGV: id, session, holding, cap. */
export const ADD_SESSION = new LuaScript(`
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  local cap = tonumber(ARGV[4])
  if cap >= 0 and redis.call('SCARD', KEYS[1]) >= cap then return 0 end
  redis.call('SADD', KEYS[1], ARGV[1])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
return 1`)

export const REMOVE_SESSION = new LuaScript(`
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1`)

/** KEYS: nodes set, this node's key, its swept marker. Says whether the key survived (see ALIVE, SWEPT). */
export const HEARTBEAT = new LuaScript(`
local existed = redis.call('EXISTS', KEYS[2])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
if existed == 1 then return 1 end
if redis.call('DEL', KEYS[3]) == 1 then return 2 end
return 0`)

export const DEAD_NODES = new LuaScript(`
local dead = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if node ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. node) == 0 then dead[#dead + 1] = node end
end
return dead`)

/**
 * Removes one node's sockets from presence in one step, so exactly one survivor reports each departure,
 * and publishes user_disconnected (a customer's with its customer_presence) for users whose last socket
 * went with it, and takes those customers out of their chats' indexes. KEYS: nodes set, consoles
 * hash, the node's sockets hash, its key, its swept marker. ARGV: node id, 'dead' (only if its key is
 * still gone) or 'self', marker TTL, and the farewells: per chat socket its id, a packet count, then
 * channel and packet pairs, each item as `<bytes>:<item>` (one argument however many sockets).
 * Returns how many departures it published and the holdings of any it had no packets for.
 */
export const SWEEP = new LuaScript(`${EMIT_FUNCTIONS}
if ARGV[2] == 'dead' and (redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 or redis.call('EXISTS', KEYS[4]) == 1) then
  return {-1, {}}
end
local item, done = fields_of(ARGV[4], 1)
local farewells = {}
while not done() do
  local connection, packets = item(), {}
  for _ = 1, tonumber(item()) do
    local channel = item()
    packets[#packets + 1] = { channel, item() }
  end
  farewells[connection] = packets
end
local announced, unannounced = 0, {}
local sockets = redis.call('HGETALL', KEYS[3])
for s = 1, #sockets, 2 do
  local connection, json = sockets[s], sockets[s + 1]
  local holding = cjson.decode(json)
  if type(holding.room) == 'string' then
    local removed = redis.call('SREM', holding.room, connection)
    local emptied = redis.call('EXISTS', holding.room) == 0
    if emptied and type(holding.customers) == 'string' then redis.call('HDEL', holding.customers, holding.room) end
    if removed == 1 and emptied then
      local farewell = farewells[connection]
      if farewell then
        for _, pair in ipairs(farewell) do emit(pair[1], pair[2]) end
        announced = announced + 1
      else
        unannounced[#unannounced + 1] = json
      end
    end
  else
    redis.call('HDEL', KEYS[2], connection)
    if type(holding.console) == 'string' then redis.call('SREM', holding.console, connection) end
  end
end
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('SREM', KEYS[1], ARGV[1])
if ARGV[2] == 'dead' then redis.call('SET', KEYS[5], '1', 'PX', ARGV[3]) end
return {announced, unannounced}`)
