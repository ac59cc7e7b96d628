import type { Redis } from 'ioredis'
import { BusUnavailableError } from './bus.js'
import type { OnlineUser, User } from './protocol.js'
import { summarizeSessions, type ConsoleSession, type Departure, type DepartureListener, type Presence } from './presence.js'
import { listen, LuaScript, type RedisLogger } from './redis.js'

export interface RedisPresenceOptions {
  /** A command connection (shared with the bus publisher): presence never waits for Redis either. */
  client: Redis
  prefix: string
  /** This process; its heartbeat key says it is alive. */
  nodeId: string
  heartbeatMs: number
  ttlMs: number
  log: RedisLogger
}

/** What a node holds, one hash field per socket, so a survivor can undo it when the node dies. */
interface ChatHolding { room: string, chat: string, userKey: string, user: User }
interface ConsoleHolding { console: true }
interface StoredSession extends Omit<ConsoleSession, 'connectedAt'> { connectedAt: string }

interface LocalHolding {
  /** The room set (chat sockets) */
  room?: string
  /** JSON in this node's sockets hash */
  holding: string
  /** JSON in the cluster's consoles hash (console sessions) */
  session?: string
}

const JOIN = new LuaScript(`
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 and redis.call('SCARD', KEYS[1]) == 1 then return 1 end
return 0`)

const LEAVE = new LuaScript(`
redis.call('HDEL', KEYS[2], ARGV[1])
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 and redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
return 0`)

const HEARTBEAT = new LuaScript(`
local existed = redis.call('EXISTS', KEYS[2])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return existed`)

/**
 * Removes a node's sockets from presence in one step (so exactly one survivor reports each departure):
 * every node whose heartbeat key expired, or with mode 'self' the calling node on shutdown. Returns the
 * holdings of users whose last socket in a chat went with it.
 */
const SWEEP = new LuaScript(`
local function sweep (node, departed)
  local socketsKey = ARGV[1] .. node .. ':sockets'
  local sockets = redis.call('HGETALL', socketsKey)
  for i = 1, #sockets, 2 do
    local connection, holding = sockets[i], sockets[i + 1]
    local room = cjson.decode(holding).room
    if type(room) == 'string' then
      if redis.call('SREM', room, connection) == 1 and redis.call('EXISTS', room) == 0 then
        departed[#departed + 1] = holding
      end
    else
      redis.call('HDEL', KEYS[2], connection)
    end
  end
  redis.call('DEL', socketsKey, ARGV[1] .. node)
  redis.call('SREM', KEYS[1], node)
end
local departed = {}
if ARGV[3] == 'self' then
  sweep(ARGV[2], departed)
else
  for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    if node ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. node) == 0 then sweep(node, departed) end
  end
end
return departed`)

const REASSERT_BATCH = 1000

/** The set of a user's socket ids in a chat, over every node. */
export function roomKey (prefix: string, chatUuid: string, userKey: string): string {
  return `${prefix}presence:room:${encodeURIComponent(chatUuid)}:${encodeURIComponent(userKey)}`
}

/**
 * Presence over every node. Keys under `<prefix>presence:`: `room:<chat>:<userKey>` (a set of socket
 * ids), `consoles` (hash of console sessions), `nodes` (known node ids), `node:<id>` (heartbeat with a
 * TTL) and `node:<id>:sockets` (what the node holds). A survivor sweeps nodes whose heartbeat expired.
 * The node keeps its own holdings in memory and writes them again after Redis lost them (a restart).
 */
export class RedisPresence implements Presence {
  readonly #client: Redis
  readonly #nodeId: string
  readonly #ttlMs: number
  readonly #log: RedisLogger
  readonly #prefix: string
  readonly #keys: { nodes: string, nodePrefix: string, node: string, sockets: string, consoles: string }
  readonly #local = new Map<string, LocalHolding>()
  readonly #timer: NodeJS.Timeout
  readonly #detach: () => void
  #listener: DepartureListener = async () => {}
  #ticking = false
  #closed = false

  constructor (options: RedisPresenceOptions) {
    this.#client = options.client
    this.#nodeId = options.nodeId
    this.#ttlMs = options.ttlMs
    this.#log = options.log
    this.#prefix = options.prefix
    const base = `${options.prefix}presence:`
    this.#keys = {
      nodes: `${base}nodes`,
      nodePrefix: `${base}node:`,
      node: `${base}node:${options.nodeId}`,
      sockets: `${base}node:${options.nodeId}:sockets`,
      consoles: `${base}consoles`
    }
    this.#timer = setInterval(() => { this.tick().catch(() => {}) }, options.heartbeatMs)
    this.#timer.unref()
    // After every (re)connect: say we are alive and write back what Redis may have lost.
    this.#detach = listen(this.#client, 'ready', () => { this.tick().catch(() => {}) })
    if (this.#client.status === 'ready') this.tick().catch(() => {})
  }

  get nodeId (): string {
    return this.#nodeId
  }

  async joinChat (chatUuid: string, userKey: string, connectionId: string, user: User): Promise<boolean> {
    const room = this.#roomKey(chatUuid, userKey)
    const stored: ChatHolding = { room, chat: chatUuid, userKey, user }
    const holding = JSON.stringify(stored)
    this.#local.set(connectionId, { room, holding })
    return await this.#command('join chat', async () =>
      await JOIN.run(this.#client, [room, this.#keys.sockets], [connectionId, holding]) === 1)
  }

  async leaveChat (chatUuid: string, userKey: string, connectionId: string): Promise<boolean> {
    if (!this.#local.delete(connectionId) || this.#closed) return false
    const room = this.#roomKey(chatUuid, userKey)
    return await this.#command('leave chat', async () =>
      await LEAVE.run(this.#client, [room, this.#keys.sockets], [connectionId]) === 1)
  }

  async addSession (session: ConsoleSession): Promise<void> {
    const stored: StoredSession = { ...session, connectedAt: new Date(session.connectedAt).toISOString() }
    const local: LocalHolding = { holding: JSON.stringify({ console: true } satisfies ConsoleHolding), session: JSON.stringify(stored) }
    this.#local.set(session.connectionId, local)
    await this.#command('add console session', async () => {
      await this.#client.multi()
        .hset(this.#keys.consoles, session.connectionId, local.session ?? '')
        .hset(this.#keys.sockets, session.connectionId, local.holding)
        .exec()
    })
  }

  async removeSession (connectionId: string): Promise<void> {
    if (!this.#local.delete(connectionId) || this.#closed) return
    await this.#command('remove console session', async () => {
      await this.#client.multi().hdel(this.#keys.consoles, connectionId).hdel(this.#keys.sockets, connectionId).exec()
    })
  }

  async onlineUsers (): Promise<OnlineUser[]> {
    const stored = await this.#command('online users', async () => await this.#client.hvals(this.#keys.consoles))
    const sessions: ConsoleSession[] = []
    for (const json of stored) {
      const session = JSON.parse(json) as StoredSession
      sessions.push({ ...session, connectedAt: Date.parse(session.connectedAt) })
    }
    return summarizeSessions(sessions)
  }

  onDepartures (listener: DepartureListener): void {
    this.#listener = listener
  }

  /** One heartbeat: renew this node's key (writing its holdings back if it had expired), sweep the dead. */
  async tick (): Promise<void> {
    if (this.#ticking || this.#closed || this.#client.status !== 'ready') return
    this.#ticking = true
    try {
      const existed = await HEARTBEAT.run(this.#client, [this.#keys.nodes, this.#keys.node], [this.#nodeId, this.#ttlMs])
      if (existed !== 1) await this.#reassert()
      const swept = await SWEEP.run(this.#client, [this.#keys.nodes, this.#keys.consoles], [this.#keys.nodePrefix, this.#nodeId, 'dead'])
      await this.#announce(swept, 'dead node swept from presence')
    } catch (error) {
      this.#log.warn({ err: error, nodeId: this.#nodeId }, 'presence heartbeat failed')
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
    this.#local.clear()
    if (this.#client.status !== 'ready') return
    try {
      const swept = await SWEEP.run(this.#client, [this.#keys.nodes, this.#keys.consoles], [this.#keys.nodePrefix, this.#nodeId, 'self'])
      await this.#announce(swept, 'node left presence')
    } catch (error) {
      this.#log.warn({ err: error, nodeId: this.#nodeId }, 'presence cleanup on close failed')
    }
  }

  async #announce (swept: unknown, message: string): Promise<void> {
    if (!Array.isArray(swept) || swept.length === 0) return
    const departures: Departure[] = swept.map((json: string) => {
      const { chat, userKey, user } = JSON.parse(json) as ChatHolding
      return { chatUuid: chat, userKey, user }
    })
    this.#log.info({ departures: departures.length }, message)
    await this.#listener(departures)
  }

  /** Writes every local holding again (idempotent); no announcements: nobody saw these users leave. */
  async #reassert (): Promise<void> {
    const connectionIds = [...this.#local.keys()]
    for (let start = 0; start < connectionIds.length; start += REASSERT_BATCH) {
      const pipeline = this.#client.pipeline()
      for (const connectionId of connectionIds.slice(start, start + REASSERT_BATCH)) {
        // Read now, not from a snapshot: a socket that left meanwhile must not come back.
        const local = this.#local.get(connectionId)
        if (local === undefined) continue
        pipeline.hset(this.#keys.sockets, connectionId, local.holding)
        if (local.room !== undefined) pipeline.sadd(local.room, connectionId)
        if (local.session !== undefined) pipeline.hset(this.#keys.consoles, connectionId, local.session)
      }
      await pipeline.exec()
    }
    if (connectionIds.length > 0) this.#log.info({ sockets: connectionIds.length, nodeId: this.#nodeId }, 'presence written back after Redis lost it')
  }

  #roomKey (chatUuid: string, userKey: string): string {
    return roomKey(this.#prefix, chatUuid, userKey)
  }

  async #command<T> (what: string, run: () => Promise<T>): Promise<T> {
    if (this.#client.status !== 'ready') throw new BusUnavailableError(`presence: ${what}: redis is not connected`)
    try {
      return await run()
    } catch (error) {
      throw new BusUnavailableError(`presence: ${what}: ${(error as Error).message}`)
    }
  }
}
