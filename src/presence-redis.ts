import type { Redis } from 'ioredis'
import type { Bus } from './bus.js'
import { BusUnavailableError, PresenceUnavailableError, StoreUnavailableError } from './store-errors.js'
import type { Metrics } from './metrics.js'
import type { OnlineUser, User } from './protocol.js'
import {
  summarizeSessions, type ChatSocket, type ConsoleSession, type Presence, type PresenceEvent, type PresencePackets
} from './presence.js'
import { listen, LuaScript, type RedisLogger } from './redis.js'

export interface RedisPresenceOptions {
  /** A command connection (shared with the bus publisher): presence never waits for Redis either. */
  client: Redis
  /** The bus on that connection: presence events go out only while it is ready (every node subscribed). */
  bus: Pick<Bus, 'isReady' | 'onStateChange'>
  prefix: string
  /** This process; its heartbeat key says it is alive. */
  nodeId: string
  heartbeatMs: number
  ttlMs: number
  /** Sockets one user may hold per chat room, and consoles per operator, over all nodes. */
  maxSocketsPerUser: number
  packets: PresencePackets
  metrics: Metrics
  log: RedisLogger
}

/** What a node holds, one hash field per socket, so a survivor can undo it when the node dies. */
interface StoredChatHolding { room: string, chat: string, userKey: string, user: User }
/** `console` names the operator's set of console ids. */
interface StoredConsoleHolding { console: string }
interface StoredSession extends Omit<ConsoleSession, 'connectedAt'> { connectedAt: string }

type Holding =
  | { kind: 'chat', socket: ChatSocket, room: string, json: string }
  | { kind: 'console', operator: string, session: string, json: string }

/** One desired state per socket id: what Redis must hold for it, and whether it is known to. */
interface Entry {
  holding: Holding
  /** The socket is open here (false: it left, and Redis must forget it). */
  present: boolean
  /** Redis did not take the last write: every heartbeat and every reconnect tries again. */
  pending: boolean
  /** Its first (capped) write has not answered yet: a write-back leaves it to that write. */
  deciding: boolean
  /** A write that records it went to Redis: until then, a leave has nothing to undo. */
  sent: boolean
  /**
   * Announce on the next write even if Redis already holds what it writes: a write that went unanswered
   * may have run when Redis came back, while no node was subscribed, or Redis lost everything meanwhile.
   */
  force: boolean
}

/** Write outcomes: refused by the cap, recorded, recorded and announced (first socket). */
const REFUSED = 0
const ANNOUNCED = 2
/** A cap that admits everything: for writes of sockets already open (retries, write-backs). */
const NO_CAP = -1
/** HEARTBEAT answers: the key was there; gone (Redis lost it); gone because a survivor swept this node. */
const ALIVE = 1
const SWEPT = 2
/** A swept node's marker lives this long, so it still knows when it wakes up after a long stall. */
const TOMBSTONE_MS = 24 * 3600 * 1000
const BATCH = 1000

/**
 * KEYS: the user's room set, this node's sockets hash. ARGV: socket id, holding, cap (-1: none), 'force'
 * or '', then channel and packet pairs of user_connected, published when the socket is the user's first
 * (with 'force': also when it already was, as an earlier attempt may have published it to nobody).
 */
const JOIN = new LuaScript(`
local added = 0
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  local cap = tonumber(ARGV[3])
  if cap >= 0 and redis.call('SCARD', KEYS[1]) >= cap then return 0 end
  added = redis.call('SADD', KEYS[1], ARGV[1])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if (added == 0 and ARGV[4] ~= 'force') or redis.call('SCARD', KEYS[1]) > 1 then return 1 end
for i = 5, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end
return 2`)

/**
 * KEYS as JOIN. ARGV: socket id, 'force' or '', then the user_disconnected pairs, published when the
 * socket was the user's last (with 'force': whenever the room is empty, as Redis may have lost the
 * socket or an earlier attempt published to nobody).
 */
const LEAVE = new LuaScript(`
redis.call('HDEL', KEYS[2], ARGV[1])
local removed = redis.call('SREM', KEYS[1], ARGV[1])
if (removed == 0 and ARGV[2] ~= 'force') or redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 3, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end
return 1`)

/** KEYS: the operator's console set, the consoles hash, this node's sockets hash. ARGV: id, session, holding, cap. */
const ADD_SESSION = new LuaScript(`
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
  local cap = tonumber(ARGV[4])
  if cap >= 0 and redis.call('SCARD', KEYS[1]) >= cap then return 0 end
  redis.call('SADD', KEYS[1], ARGV[1])
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
return 1`)

const REMOVE_SESSION = new LuaScript(`
redis.call('SREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1`)

/** KEYS: nodes set, this node's key, its swept marker. Says whether the key survived (see ALIVE, SWEPT). */
const HEARTBEAT = new LuaScript(`
local existed = redis.call('EXISTS', KEYS[2])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
if existed == 1 then return 1 end
if redis.call('DEL', KEYS[3]) == 1 then return 2 end
return 0`)

const DEAD_NODES = new LuaScript(`
local dead = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if node ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. node) == 0 then dead[#dead + 1] = node end
end
return dead`)

/**
 * Removes one node's sockets from presence in one step, so exactly one survivor reports each departure,
 * and publishes user_disconnected for users whose last socket went with it. KEYS: nodes set, consoles
 * hash, the node's sockets hash, its key, its swept marker. ARGV: node id, 'dead' (only if its key is
 * still gone) or 'self', marker TTL, and the farewells: per chat socket its id, a packet count, then
 * channel and packet pairs, each item as `<bytes>:<item>` (one argument however many sockets).
 * Returns how many departures it published and the holdings of any it had no packets for.
 */
const SWEEP = new LuaScript(`
if ARGV[2] == 'dead' and (redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 or redis.call('EXISTS', KEYS[4]) == 1) then
  return {-1, {}}
end
local blob, at = ARGV[4], 1
local function item ()
  local colon = string.find(blob, ':', at, true)
  local length = tonumber(string.sub(blob, at, colon - 1))
  at = colon + length + 1
  return string.sub(blob, colon + 1, colon + length)
end
local farewells = {}
while at <= #blob do
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
    if redis.call('SREM', holding.room, connection) == 1 and redis.call('EXISTS', holding.room) == 0 then
      local farewell = farewells[connection]
      if farewell then
        for _, pair in ipairs(farewell) do redis.call('PUBLISH', pair[1], pair[2]) end
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

/** The set of a user's socket ids in a chat, over every node. */
export function roomKey (prefix: string, chatUuid: string, userKey: string): string {
  return `${prefix}presence:room:${encodeURIComponent(chatUuid)}:${encodeURIComponent(userKey)}`
}

/** The set of an operator's console socket ids, over every node. */
export function operatorKey (prefix: string, operatorId: string): string {
  return `${prefix}presence:operator:${encodeURIComponent(operatorId)}`
}

/** Script arguments may carry packets: ioredis sends a Buffer as it is. */
async function runScript (script: LuaScript, client: Redis, keys: string[], args: Array<string | number | Buffer>): Promise<unknown> {
  return await script.run(client, keys, args as Array<string | number>)
}

function chatSocketOf (connectionId: string, json: string): ChatSocket | undefined {
  const holding = JSON.parse(json) as Partial<StoredChatHolding>
  if (typeof holding.room !== 'string' || holding.chat === undefined || holding.userKey === undefined || holding.user === undefined) return undefined
  return { chatUuid: holding.chat, userKey: holding.userKey, connectionId, user: holding.user }
}

/**
 * Presence over every node. Keys under `<prefix>presence:`: `room:<chat>:<userKey>` (a set of socket
 * ids), `operator:<id>` (a set of console ids), `consoles` (hash of console sessions), `nodes` (known
 * node ids), `node:<id>` (heartbeat with a TTL), `node:<id>:sockets` (what the node holds) and
 * `node:<id>:swept` (a survivor swept it). A survivor sweeps nodes whose heartbeat expired. The node
 * keeps one desired state per socket in memory: a write Redis did not take is retried until it does,
 * and all of it is written back after Redis lost it (a restart) or a survivor swept this node (a stall).
 */
export class RedisPresence implements Presence {
  readonly #client: Redis
  readonly #bus: Pick<Bus, 'isReady'>
  readonly #nodeId: string
  readonly #ttlMs: number
  readonly #cap: number
  readonly #packets: PresencePackets
  readonly #metrics: Metrics
  readonly #log: RedisLogger
  readonly #prefix: string
  readonly #keys: { nodes: string, nodePrefix: string, consoles: string }
  readonly #entries = new Map<string, Entry>()
  /** Per socket id, the write in flight: writes of one socket reach Redis one after the other. */
  readonly #chains = new Map<string, Promise<unknown>>()
  readonly #timer: NodeJS.Timeout
  readonly #detach: () => void
  /** Redis lost this node's holdings ('lost') or a survivor swept them ('swept'): write them back. */
  #writeBack: 'lost' | 'swept' | undefined
  #ticking = false
  #tickAgain = false
  /** A failed write was logged and some are still pending: the next ones are only counted (one line per outage). */
  #failureLogged = false
  #closed = false

  constructor (options: RedisPresenceOptions) {
    this.#client = options.client
    this.#bus = options.bus
    this.#nodeId = options.nodeId
    this.#ttlMs = options.ttlMs
    this.#cap = options.maxSocketsPerUser
    this.#packets = options.packets
    this.#metrics = options.metrics
    this.#log = options.log
    this.#prefix = options.prefix
    const base = `${options.prefix}presence:`
    this.#keys = { nodes: `${base}nodes`, nodePrefix: `${base}node:`, consoles: `${base}consoles` }
    const tick = (): void => { this.tick().catch(() => {}) }
    this.#timer = setInterval(tick, options.heartbeatMs)
    this.#timer.unref()
    // After every (re)connect: say we are alive; once the bus is back, write what Redis did not take.
    this.#detach = listen(this.#client, 'ready', tick)
    options.bus.onStateChange((state) => { if (state === 'ready') tick() })
    if (this.#client.status === 'ready') tick()
  }

  get nodeId (): string {
    return this.#nodeId
  }

  async joinChat (socket: ChatSocket): Promise<boolean> {
    const room = roomKey(this.#prefix, socket.chatUuid, socket.userKey)
    const stored: StoredChatHolding = { room, chat: socket.chatUuid, userKey: socket.userKey, user: socket.user }
    return await this.#admit(socket.connectionId, { kind: 'chat', socket, room, json: JSON.stringify(stored) }, 'join')
  }

  async leaveChat (connectionId: string): Promise<void> {
    await this.#release(connectionId, 'leave')
  }

  async addSession (session: ConsoleSession): Promise<boolean> {
    const operator = operatorKey(this.#prefix, session.operatorId)
    const stored: StoredSession = { ...session, connectedAt: new Date(session.connectedAt).toISOString() }
    const holding: StoredConsoleHolding = { console: operator }
    return await this.#admit(session.connectionId, {
      kind: 'console', operator, session: JSON.stringify(stored), json: JSON.stringify(holding)
    }, 'add_session')
  }

  async removeSession (connectionId: string): Promise<void> {
    await this.#release(connectionId, 'remove_session')
  }

  async onlineUsers (): Promise<OnlineUser[]> {
    if (this.#client.status !== 'ready') throw new PresenceUnavailableError('presence: online users: redis is not connected')
    let stored: string[]
    try {
      stored = await this.#client.hvals(this.#keys.consoles)
    } catch (error) {
      throw new PresenceUnavailableError(`presence: online users: ${(error as Error).message}`)
    }
    const sessions: ConsoleSession[] = []
    for (const json of stored) {
      const session = JSON.parse(json) as StoredSession
      sessions.push({ ...session, connectedAt: Date.parse(session.connectedAt) })
    }
    return summarizeSessions(sessions)
  }

  /**
   * One heartbeat: renew this node's key, then (while the bus is ready) write back what Redis lost, retry
   * what it did not take, and sweep dead nodes. A tick asked for while one runs runs again after it.
   */
  async tick (): Promise<void> {
    if (this.#closed) return
    if (this.#ticking) {
      this.#tickAgain = true
      return
    }
    this.#ticking = true
    try {
      do {
        this.#tickAgain = false
        await this.#beat()
      } while (this.#tickAgain && !this.#closed)
    } finally {
      this.#ticking = false
    }
  }

  /** Leaves the cluster: this node's sockets go from presence at once, and their departures are announced. */
  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#timer)
    this.#detach()
    // A write still in flight must land before the sweep, or it would outlive this node in Redis.
    await Promise.allSettled([...this.#chains.values()])
    try {
      if (this.#client.status === 'ready') await this.#sweep(this.#nodeId, 'self')
    } catch (error) {
      this.#log.warn({ err: error, nodeId: this.#nodeId }, 'presence cleanup on close failed')
    }
    this.#entries.clear()
  }

  /** The socket's first write, under the cap; Redis away: admitted all the same, and written once it is back. */
  async #admit (connectionId: string, holding: Holding, operation: string): Promise<boolean> {
    if (this.#closed) return true
    const entry: Entry = { holding, present: true, pending: false, deciding: true, sent: false, force: false }
    this.#entries.set(connectionId, entry)
    return await this.#serial(connectionId, async () => {
      try {
        // Gone before its turn: the leave queued behind this one cleans up.
        if (!entry.present) return true
        if (await this.#write(connectionId, entry, this.#cap) !== REFUSED) return true
        if (this.#entries.get(connectionId) === entry) this.#entries.delete(connectionId)
        return false
      } catch (error) {
        this.#failed(operation, connectionId, entry, error)
        return true
      } finally {
        entry.deciding = false
      }
    })
  }

  async #release (connectionId: string, operation: string): Promise<void> {
    const entry = this.#entries.get(connectionId)
    if (entry === undefined || !entry.present || this.#closed) return
    entry.present = false
    await this.#serial(connectionId, async () => {
      if (this.#entries.get(connectionId) !== entry) return
      // Never written (Redis was away all along): nothing to undo, nothing to announce.
      if (!entry.sent) {
        this.#entries.delete(connectionId)
        return
      }
      try {
        await this.#erase(connectionId, entry)
        this.#entries.delete(connectionId)
      } catch (error) {
        this.#failed(operation, connectionId, entry, error)
      }
    })
  }

  #failed (operation: string, connectionId: string, entry: Entry, error: unknown): void {
    // Sent but unanswered (not refused before sending): it may still run, its announcement unheard.
    if (!(error instanceof StoreUnavailableError)) entry.force = true
    if (entry.pending) return
    entry.pending = true
    this.#metrics.presenceFailures.inc({ operation })
    if (this.#failureLogged) return
    this.#failureLogged = true
    this.#log.warn({ err: error, operation, connectionId }, 'presence write not taken by redis: retried until it is (further ones are counted in relay_presence_failures_total)')
  }

  /** Records a socket (JOIN or ADD_SESSION); chat sockets only while the bus can carry the announcement. */
  async #write (connectionId: string, entry: Entry, cap: number): Promise<number> {
    const { holding } = entry
    if (holding.kind === 'console') {
      this.#ensureConnected(false)
      entry.sent = true
      return Number(await ADD_SESSION.run(this.#client,
        [holding.operator, this.#keys.consoles, this.#socketsKey(this.#nodeId)], [connectionId, holding.session, holding.json, cap]))
    }
    this.#ensureConnected(true)
    entry.sent = true
    const outcome = Number(await runScript(JOIN, this.#client, [holding.room, this.#socketsKey(this.#nodeId)],
      [connectionId, holding.json, cap, entry.force ? 'force' : '', ...this.#packetArgs('user_connected', holding.socket)]))
    entry.force = false
    if (outcome === ANNOUNCED) this.#metrics.eventsAccepted.inc({ source: 'presence' })
    return outcome
  }

  /** Forgets a socket (LEAVE or REMOVE_SESSION). */
  async #erase (connectionId: string, entry: Entry): Promise<void> {
    const { holding } = entry
    if (holding.kind === 'console') {
      this.#ensureConnected(false)
      await REMOVE_SESSION.run(this.#client, [holding.operator, this.#keys.consoles, this.#socketsKey(this.#nodeId)], [connectionId])
      return
    }
    this.#ensureConnected(true)
    const announced = await runScript(LEAVE, this.#client, [holding.room, this.#socketsKey(this.#nodeId)],
      [connectionId, entry.force ? 'force' : '', ...this.#packetArgs('user_disconnected', holding.socket)])
    entry.force = false
    if (announced === 1) this.#metrics.eventsAccepted.inc({ source: 'presence' })
  }

  #ensureConnected (announcing: boolean): void {
    if (this.#client.status !== 'ready') throw new PresenceUnavailableError('presence: redis is not connected')
    // Redis pub/sub keeps nothing: an announcement before every node resubscribed would be lost for some.
    if (announcing && !this.#bus.isReady()) throw new BusUnavailableError('presence: the bus is not ready')
  }

  async #beat (): Promise<void> {
    if (this.#client.status !== 'ready') return
    try {
      const state = await HEARTBEAT.run(this.#client,
        [this.#keys.nodes, this.#nodeKey(this.#nodeId), this.#sweptKey(this.#nodeId)], [this.#nodeId, this.#ttlMs])
      if (state === SWEPT) this.#writeBack = 'swept'
      else if (state !== ALIVE) this.#writeBack ??= 'lost'
    } catch (error) {
      this.#metrics.presenceFailures.inc({ operation: 'heartbeat' })
      this.#log.warn({ err: error, nodeId: this.#nodeId }, 'presence heartbeat failed')
      return
    }
    if (!this.#bus.isReady()) return
    try {
      if (this.#writeBack !== undefined) {
        await this.#reassert(this.#writeBack)
        this.#writeBack = undefined
      }
      await this.#retryPending()
      const dead = await DEAD_NODES.run(this.#client, [this.#keys.nodes], [this.#keys.nodePrefix, this.#nodeId])
      for (const node of Array.isArray(dead) ? dead as string[] : []) await this.#sweep(node, 'dead')
    } catch (error) {
      this.#log.warn({ err: error, nodeId: this.#nodeId }, 'presence write-back or sweep failed: next heartbeat tries again')
    }
  }

  /**
   * Writes every open socket again (idempotent). A re-join that is a user's first announces user_connected:
   * a survivor may have announced the user gone meanwhile. Throws if Redis did not take all of it.
   */
  async #reassert (cause: 'lost' | 'swept'): Promise<void> {
    const connectionIds = [...this.#entries.keys()]
    for (let start = 0; start < connectionIds.length; start += BATCH) {
      await Promise.all(connectionIds.slice(start, start + BATCH).map(async (connectionId) => {
        // Read now, not from a snapshot: a socket that left meanwhile must not come back.
        const entry = this.#entries.get(connectionId)
        if (entry === undefined || entry.deciding) return
        if (!entry.present) {
          if (entry.pending && cause === 'lost') entry.force = true
          return
        }
        await this.#write(connectionId, entry, NO_CAP)
        if (entry.present) entry.pending = false
      }))
    }
    if (connectionIds.length > 0) this.#log.info({ sockets: connectionIds.length, nodeId: this.#nodeId, cause }, 'presence written back')
  }

  /** Writes Redis did not take, again, each after whatever its socket has in flight. */
  async #retryPending (): Promise<void> {
    const retries: Array<Promise<boolean>> = []
    for (const [connectionId, entry] of this.#entries) {
      if (entry.pending) retries.push(this.#serial(connectionId, async () => await this.#retry(connectionId, entry)))
    }
    if (retries.length === 0) return
    const taken = (await Promise.all(retries)).filter((done) => done).length
    if (taken === retries.length) this.#failureLogged = false
    this.#log.info({ retried: retries.length, taken, nodeId: this.#nodeId }, 'pending presence writes retried')
  }

  async #retry (connectionId: string, entry: Entry): Promise<boolean> {
    if (!entry.pending || this.#entries.get(connectionId) !== entry) return true
    try {
      if (entry.present) {
        await this.#write(connectionId, entry, NO_CAP)
      } else {
        await this.#erase(connectionId, entry)
        this.#entries.delete(connectionId)
      }
      entry.pending = false
      return true
    } catch {
      return false
    }
  }

  /** Sweeps one node (see SWEEP); its users' user_disconnected packets are built here, published there. */
  async #sweep (node: string, mode: 'dead' | 'self'): Promise<void> {
    const holdings = await this.#client.hgetall(this.#socketsKey(node))
    const farewells: Buffer[] = []
    const add = (item: string | Buffer): void => {
      const bytes = typeof item === 'string' ? Buffer.from(item) : item
      farewells.push(Buffer.from(`${bytes.length}:`), bytes)
    }
    for (const [connectionId, json] of Object.entries(holdings)) {
      const socket = chatSocketOf(connectionId, json)
      if (socket === undefined) continue
      const packets = this.#packetArgs('user_disconnected', socket)
      add(connectionId)
      add(String(packets.length / 2))
      for (const item of packets) add(item)
    }
    const keys = [this.#keys.nodes, this.#keys.consoles, this.#socketsKey(node), this.#nodeKey(node), this.#sweptKey(node)]
    const [announced, unannounced] = await runScript(SWEEP, this.#client, keys, [node, mode, TOMBSTONE_MS, Buffer.concat(farewells)]) as [number, string[]]
    if (announced < 0) return
    // Holdings written between the read and the sweep (none expected): announced after it.
    for (const json of unannounced) {
      const socket = chatSocketOf('', json)
      if (socket === undefined) continue
      const packets = this.#packets('user_disconnected', socket.chatUuid, socket.userKey, socket.user)
      await Promise.all(packets.map(async ({ topic, packet }) => await this.#client.publish(this.#prefix + topic, packet)))
    }
    const departures = announced + unannounced.length
    if (departures > 0) this.#metrics.eventsAccepted.inc({ source: 'presence' }, departures)
    this.#log.info({ node, departures }, mode === 'dead' ? 'dead node swept from presence' : 'node left presence')
  }

  /** Channel and packet pairs of a presence event, as script arguments. */
  #packetArgs (event: PresenceEvent, socket: ChatSocket): Array<string | Buffer> {
    return this.#packets(event, socket.chatUuid, socket.userKey, socket.user).flatMap(({ topic, packet }) => [this.#prefix + topic, packet])
  }

  /** Runs `write` after every earlier write of the same socket settled. */
  async #serial<T> (connectionId: string, write: () => Promise<T>): Promise<T> {
    const previous = this.#chains.get(connectionId) ?? Promise.resolve()
    const next = previous.then(write)
    const settled = next.then(() => {}, () => {})
    this.#chains.set(connectionId, settled)
    settled.then(() => { if (this.#chains.get(connectionId) === settled) this.#chains.delete(connectionId) }, () => {})
    return await next
  }

  #nodeKey (node: string): string {
    return this.#keys.nodePrefix + node
  }

  #socketsKey (node: string): string {
    return `${this.#keys.nodePrefix}${node}:sockets`
  }

  #sweptKey (node: string): string {
    return `${this.#keys.nodePrefix}${node}:swept`
  }
}
