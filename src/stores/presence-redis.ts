import type { Bus } from './bus.js'
import { PresenceUnavailableError } from './store-errors.js'
import type { Metrics } from '../metrics.js'
import type { ChatCustomers, OnlineUser } from '../protocol/protocol.js'
import {
  summarizeSessions, type ChatSocket, type ConsoleSession, type Presence, type PresencePackets
} from './presence.js'
import { listen, type RedisCommands, type RedisLogger } from './redis.js'
import { PresenceKeys, PresenceNode, type NodePresence, type StoredChatHolding } from './presence-node.js'
import { ShardedWrites } from './presence-sharded.js'
import { ShardedPresenceNode } from './presence-sharded-node.js'
import { SocketRecords, type StoredConsoleHolding, type StoredSession } from './presence-sockets.js'
import { ScriptWrites } from './presence-writes.js'

export interface RedisPresenceOptions {
  /** A command connection (shared with the bus publisher): presence never waits for Redis either. */
  client: RedisCommands
  /**
   * Redis Cluster: every script on one slot (see PresenceKeys, presence-scripts-sharded). The bus must be
   * sharded too, and `packets` give customer_presence as the bus's durable arguments (bus.durableArgument).
   */
  sharded?: boolean
  /** The bus on that connection: presence events go out only while it is ready (every node subscribed). */
  bus: Pick<Bus, 'canAnnounce' | 'onStateChange'>
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

/**
 * Presence over every node. Keys under `<prefix>presence:`: `room:<chat>:<userKey>` (a set of socket
 * ids), `customers:<chat>` (the chat's customers present: room key → holding), `operator:<id>` (a set
 * of console ids), `consoles` (hash of console sessions), `nodes` (known node ids), `node:<id>`
 * (heartbeat with a TTL), `node:<id>:sockets` (what the node holds) and
 * `node:<id>:swept` (a survivor swept it). A survivor sweeps nodes whose heartbeat expired. The node
 * keeps one desired state per socket in memory: a write Redis did not take is retried until it does,
 * and all of it is written back after Redis lost it (a restart) or a survivor swept this node (a stall).
 * On a Redis Cluster (`sharded`) the same, one slot per script: see ShardedWrites and ShardedPresenceNode.
 */
export class RedisPresence implements Presence {
  readonly #client: RedisCommands
  readonly #sharded: boolean
  readonly #bus: Pick<Bus, 'canAnnounce'>
  readonly #nodeId: string
  readonly #metrics: Metrics
  readonly #log: RedisLogger
  readonly #keys: PresenceKeys
  readonly #node: NodePresence
  readonly #records: SocketRecords
  readonly #timer: NodeJS.Timeout
  readonly #detach: () => void
  /** Redis lost this node's holdings ('lost') or a survivor swept them ('swept'): write them back. */
  #writeBack: 'lost' | 'swept' | undefined
  #ticking = false
  #tickAgain = false
  #closed = false

  constructor (options: RedisPresenceOptions) {
    this.#client = options.client
    this.#bus = options.bus
    this.#nodeId = options.nodeId
    this.#metrics = options.metrics
    this.#log = options.log
    this.#sharded = options.sharded ?? false
    const keys = new PresenceKeys(options.prefix, this.#sharded)
    this.#keys = keys
    const writes = this.#sharded ? new ShardedWrites({ ...options, keys }) : new ScriptWrites({ ...options, keys })
    this.#node = this.#sharded ? new ShardedPresenceNode({ ...options, keys }) : new PresenceNode({ ...options, keys })
    this.#records = new SocketRecords({ ...options, writes })
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
    // Closing: this node leaves presence whole (its sweep), nothing more is written.
    if (this.#closed) return true
    const room = this.#keys.room(socket.chatUuid, socket.userKey)
    const stored: StoredChatHolding = { room, chat: socket.chatUuid, userKey: socket.userKey, user: socket.user }
    if (socket.customerScope === undefined) {
      return await this.#records.admit(socket.connectionId, { kind: 'chat', socket, room, json: JSON.stringify(stored) }, 'join')
    }
    const customers = this.#keys.customers(socket.chatUuid)
    const json = JSON.stringify({ ...stored, customers, scope: socket.customerScope })
    return await this.#records.admit(socket.connectionId, { kind: 'chat', socket, room, customers, json }, 'join')
  }

  async leaveChat (connectionId: string): Promise<void> {
    if (this.#closed) return
    await this.#records.release(connectionId, 'leave')
  }

  async addSession (session: ConsoleSession): Promise<boolean> {
    if (this.#closed) return true
    const operator = this.#keys.operator(session.operatorId)
    const stored: StoredSession = { ...session, connectedAt: new Date(session.connectedAt).toISOString() }
    const holding: StoredConsoleHolding = { console: operator }
    return await this.#records.admit(session.connectionId, {
      kind: 'console', operator, session: JSON.stringify(stored), json: JSON.stringify(holding)
    }, 'add_session')
  }

  async removeSession (connectionId: string): Promise<void> {
    if (this.#closed) return
    await this.#records.release(connectionId, 'remove_session')
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

  /** One pipeline for every chat: each chat's customer index holds one holding per customer present. */
  async customersOnline (chatUuids: readonly string[]): Promise<ChatCustomers[]> {
    if (this.#client.status !== 'ready') throw new PresenceUnavailableError('presence: customers online: redis is not connected')
    if (this.#sharded) return await this.#customersOnlineSharded(chatUuids)
    const pipeline = this.#client.pipeline()
    for (const chatUuid of chatUuids) pipeline.hvals(this.#keys.customers(chatUuid))
    let answers: Array<[Error | null, unknown]> | null
    try {
      answers = await pipeline.exec()
    } catch (error) {
      throw new PresenceUnavailableError(`presence: customers online: ${(error as Error).message}`)
    }
    return chatUuids.map((chatUuid, index) => {
      const [error, holdings] = answers?.[index] ?? [new Error('no answer'), null]
      if (error !== null) throw new PresenceUnavailableError(`presence: customers online: ${error.message}`)
      return { chat: { uuid: chatUuid }, users: usersOf(holdings as string[]) }
    })
  }

  /** A cluster pipeline must stay on one node: one HVALS per chat, in parallel (each chat its own slot). */
  async #customersOnlineSharded (chatUuids: readonly string[]): Promise<ChatCustomers[]> {
    try {
      const indexes = await Promise.all(chatUuids.map(async (chatUuid) => await this.#client.hvals(this.#keys.customers(chatUuid))))
      return chatUuids.map((chatUuid, index) => ({ chat: { uuid: chatUuid }, users: usersOf(indexes[index] ?? []) }))
    } catch (error) {
      throw new PresenceUnavailableError(`presence: customers online: ${(error as Error).message}`)
    }
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
    await this.#records.settled()
    try {
      if (this.#client.status === 'ready') await this.#node.sweep(this.#nodeId, 'self')
    } catch (error) {
      this.#log.warn({ err: error, nodeId: this.#nodeId }, 'presence cleanup on close failed')
    }
    this.#records.clear()
  }

  async #beat (): Promise<void> {
    if (this.#client.status !== 'ready') return
    try {
      const state = await this.#node.heartbeat()
      // A survivor is sweeping this node: writing back now would race it; the sweep's end says 'swept'.
      if (state === 'sweeping') return
      if (state === 'swept') this.#writeBack = 'swept'
      else if (state === 'lost') this.#writeBack ??= 'lost'
    } catch (error) {
      this.#metrics.presenceFailures.inc({ operation: 'heartbeat' })
      this.#log.warn({ err: error, nodeId: this.#nodeId }, 'presence heartbeat failed')
      return
    }
    if (!this.#bus.canAnnounce()) return
    try {
      if (this.#writeBack !== undefined) {
        await this.#records.reassert(this.#writeBack)
        this.#writeBack = undefined
      }
      await this.#records.retryPending()
      await this.#node.sweepDead()
    } catch (error) {
      this.#log.warn({ err: error, nodeId: this.#nodeId }, 'presence write-back or sweep failed: next heartbeat tries again')
    }
  }
}

function usersOf (holdings: string[]): ChatCustomers['users'] {
  return holdings.map((json) => (JSON.parse(json) as StoredChatHolding).user)
}
