import type { Bus } from './bus.js'
import type { Metrics } from '../metrics.js'
import type { ChatSocket, ConsoleSession } from './presence.js'
import { ANNOUNCED, BATCH, NO_CAP, REFUSED } from './presence-scripts.js'
import { UnsettledError, type PresenceWrites } from './presence-writes.js'
import type { RedisCommands, RedisLogger } from './redis.js'
import { BusUnavailableError, PresenceUnavailableError, StoreUnavailableError } from './store-errors.js'

/** What a node holds, one hash field per socket, so a survivor can undo it when the node dies. */
/** `console` names the operator's set of console ids. */
export interface StoredConsoleHolding { console: string }
export interface StoredSession extends Omit<ConsoleSession, 'connectedAt'> { connectedAt: string }

/** `customers`: a customer's chat index (see JOIN). */
export interface ChatHolding { kind: 'chat', socket: ChatSocket, room: string, customers?: string, json: string }
export interface ConsoleHolding { kind: 'console', operator: string, session: string, json: string }
export type Holding = ChatHolding | ConsoleHolding

/** One desired state per socket id: what Redis must hold for it, and whether it is known to. */
export interface Entry {
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

export interface SocketRecordsOptions {
  client: RedisCommands
  /** Sockets one user may hold per chat room, and consoles per operator, over all nodes. */
  maxSocketsPerUser: number
  log: RedisLogger
  bus: Pick<Bus, 'canAnnounce'>
  nodeId: string
  metrics: Metrics
  writes: PresenceWrites
}

/** One socket's record in Redis: written and erased by the scripts that decide and announce (see PresenceWrites). */
export class SocketRecords {
  readonly #entries = new Map<string, Entry>()
  /** Per socket id, the write in flight: writes of one socket reach Redis one after the other. */
  readonly #chains = new Map<string, Promise<unknown>>()
  /** A failed write was logged and some are still pending: the next ones are only counted (one line per outage). */
  #failureLogged = false

  constructor (readonly options: SocketRecordsOptions) {}

  /** Every write in flight has settled (a closing node sweeps itself after that). */
  async settled (): Promise<void> {
    await Promise.allSettled([...this.#chains.values()])
  }

  clear (): void {
    this.#entries.clear()
  }


  /** Records a socket (JOIN or ADD_SESSION); chat sockets only while the bus can carry the announcement. */
  async write (connectionId: string, entry: Entry, cap: number): Promise<number> {
    const { holding } = entry
    const { writes } = this.options
    if (holding.kind === 'console') {
      this.ensureConnected(false)
      entry.sent = true
      return await writes.addSession(connectionId, holding, cap)
    }
    this.ensureConnected(true)
    entry.sent = true
    const outcome = await writes.join(connectionId, holding, cap, entry.force)
    entry.force = false
    if (outcome === ANNOUNCED) this.options.metrics.eventsAccepted.inc({ source: 'presence' })
    if (outcome !== REFUSED) await writes.settle(connectionId, holding, true)
    return outcome
  }

  /** Forgets a socket (LEAVE or REMOVE_SESSION). */
  async erase (connectionId: string, entry: Entry): Promise<void> {
    const { holding } = entry
    const { writes } = this.options
    if (holding.kind === 'console') {
      this.ensureConnected(false)
      await writes.removeSession(connectionId, holding)
      return
    }
    this.ensureConnected(true)
    const announced = await writes.leave(connectionId, holding, entry.force)
    entry.force = false
    if (announced) this.options.metrics.eventsAccepted.inc({ source: 'presence' })
    await writes.settle(connectionId, holding, false)
  }

  ensureConnected (announcing: boolean): void {
    if (this.options.client.status !== 'ready') throw new PresenceUnavailableError('presence: redis is not connected')
    // Redis pub/sub keeps nothing: an announcement before every node resubscribed would be lost for some.
    if (announcing && !this.options.bus.canAnnounce()) throw new BusUnavailableError('presence: the bus is not ready to announce')
  }

  /** The socket's first write, under the cap; Redis away: admitted all the same, and written once it is back. */
  async admit (connectionId: string, holding: Holding, operation: string): Promise<boolean> {
    const entry: Entry = { holding, present: true, pending: false, deciding: true, sent: false, force: false }
    this.#entries.set(connectionId, entry)
    return await this.#serial(connectionId, async () => {
      try {
        // Gone before its turn: the leave queued behind this one cleans up.
        if (!entry.present) return true
        if (await this.write(connectionId, entry, this.options.maxSocketsPerUser) !== REFUSED) return true
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

  async release (connectionId: string, operation: string): Promise<void> {
    const entry = this.#entries.get(connectionId)
    if (entry === undefined || !entry.present) return
    entry.present = false
    await this.#serial(connectionId, async () => {
      if (this.#entries.get(connectionId) !== entry) return
      // Never written (Redis was away all along): nothing to undo, nothing to announce.
      if (!entry.sent) {
        this.#entries.delete(connectionId)
        return
      }
      try {
        await this.erase(connectionId, entry)
        this.#entries.delete(connectionId)
      } catch (error) {
        this.#failed(operation, connectionId, entry, error)
      }
    })
  }

  #failed (operation: string, connectionId: string, entry: Entry, error: unknown): void {
    const unsettled = error instanceof UnsettledError
    // Sent but unanswered (not refused before sending): it may still run, its announcement unheard.
    if (!(error instanceof StoreUnavailableError) && !unsettled) entry.force = true
    if (entry.pending) return
    entry.pending = true
    this.options.metrics.presenceFailures.inc({ operation: unsettled ? error.operation : operation })
    if (this.#failureLogged) return
    this.#failureLogged = true
    this.options.log.warn({ err: error, operation, connectionId }, 'presence write not taken by redis: retried until it is (further ones are counted in relay_presence_failures_total)')
  }

  /**
   * Writes every open socket again (idempotent). A re-join that is a user's first announces user_connected:
   * a survivor may have announced the user gone meanwhile. Throws if Redis did not take all of it.
   */
  async reassert (cause: 'lost' | 'swept'): Promise<void> {
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
        await this.write(connectionId, entry, NO_CAP)
        if (entry.present) entry.pending = false
      }))
    }
    if (connectionIds.length > 0) this.options.log.info({ sockets: connectionIds.length, nodeId: this.options.nodeId, cause }, 'presence written back')
  }

  /** Writes Redis did not take, again, each after whatever its socket has in flight. */
  async retryPending (): Promise<void> {
    const retries: Array<Promise<boolean>> = []
    for (const [connectionId, entry] of this.#entries) {
      if (entry.pending) retries.push(this.#serial(connectionId, async () => await this.#retry(connectionId, entry)))
    }
    if (retries.length === 0) return
    const taken = (await Promise.all(retries)).filter((done) => done).length
    if (taken === retries.length) this.#failureLogged = false
    this.options.log.info({ retried: retries.length, taken, nodeId: this.options.nodeId }, 'pending presence writes retried')
  }

  async #retry (connectionId: string, entry: Entry): Promise<boolean> {
    if (!entry.pending || this.#entries.get(connectionId) !== entry) return true
    try {
      if (entry.present) {
        await this.write(connectionId, entry, NO_CAP)
      } else {
        await this.erase(connectionId, entry)
        this.#entries.delete(connectionId)
      }
      entry.pending = false
      return true
    } catch {
      return false
    }
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
}
