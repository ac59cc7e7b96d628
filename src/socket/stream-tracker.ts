import { crc32 } from 'node:zlib'
import type { Bus, StreamPosition } from '../stores/bus.js'
import { decodePacket, type Packet } from '../protocol/packet.js'
import type { Metrics } from '../metrics.js'

export interface TrackerHooks {
  /** A durable packet, in offset order per stream, each once. */
  deliver: (topic: string, packet: Packet) => void
  /** The stream lost what this node's sockets missed (trimmed, another epoch): they must reconnect. */
  broken: (topic: string) => void
  log: { warn: (object: object, message: string) => void }
}

interface Waiter {
  offset: number
  resolve: (reached: boolean) => void
}

interface StreamState {
  epoch: string | undefined
  /** The offset of the last event delivered to this node's sockets. */
  offset: number
  /** Packets held while the position is read or a gap is fetched; undefined while live. */
  held: Packet[] | undefined
  /** A resubscription came while the stream was being read: read it again after. */
  again: boolean
  /**
   * The last delivered event, to check after a reconnect that the stream still has it at its offset: a
   * failover to a replica that missed the tail reuses those offsets for other events.
   */
  lastAt: number
  lastSum: number
  /** The offset lastAt and lastSum are of (0: nothing delivered since the position was read). */
  lastOffset: number
  /** The next repair reads the last delivered event too and compares (set on every resubscription). */
  verify: boolean
  waiters: Waiter[]
}

/** Held packets of one stream beyond which the node gives up repairing it and closes its sockets. */
const MAX_HELD = 10_000
const RETRY_MS = 1000
/** How long a socket's first read of a stream position waits for Redis before the socket is closed 1012. */
const OPEN_WAIT_MS = 3000

/**
 * Where this node stands in each stream it holds, so its sockets get every durable event once and in
 * offset order: a packet that jumps ahead, arrives in another epoch, or follows a resubscription makes
 * the node read the gap back from the stream (holding what comes meanwhile), or, if the stream no
 * longer has it, close the stream's sockets so their clients reconnect with `since` (SPEC Recovery).
 */
export class StreamTracker {
  readonly #states = new Map<string, StreamState>()

  constructor (readonly bus: Bus, readonly hooks: TrackerHooks, readonly metrics: Metrics, readonly readLimit: number) {}

  /** Starts tracking a topic just subscribed: reads its position, holding the packets that come meanwhile. */
  async open (topic: string): Promise<void> {
    const state: StreamState = { epoch: undefined, offset: 0, held: [], again: false, waiters: [], lastAt: 0, lastSum: 0, lastOffset: 0, verify: false }
    this.#states.set(topic, state)
    const started = Date.now()
    for (;;) {
      try {
        const [position] = await this.bus.positions([topic])
        if (this.#states.get(topic) !== state || position === undefined) return
        state.epoch = position.epoch
        state.offset = position.offset
        break
      } catch (error) {
        // Redis not connected yet (a node just booted) or briefly away: worth a short wait, not a refusal.
        if (this.#states.get(topic) === state && Date.now() - started < OPEN_WAIT_MS) {
          await new Promise((resolve) => setTimeout(resolve, RETRY_MS / 10))
          if (this.#states.get(topic) === state) continue
        }
        if (this.#states.get(topic) === state) this.#states.delete(topic)
        throw error
      }
    }
    this.#release(topic, state)
  }

  has (topic: string): boolean {
    const state = this.#states.get(topic)
    return state !== undefined && state.epoch !== undefined
  }

  close (topic: string): void {
    const state = this.#states.get(topic)
    if (state === undefined) return
    this.#states.delete(topic)
    for (const waiter of state.waiters.splice(0)) waiter.resolve(false)
  }

  position (topic: string): StreamPosition | undefined {
    const state = this.#states.get(topic)
    return state?.epoch === undefined ? undefined : { epoch: state.epoch, offset: state.offset }
  }

  accept (topic: string, packet: Packet): void {
    const state = this.#states.get(topic)
    if (state === undefined) return
    if (state.held !== undefined) {
      state.held.push(packet)
      if (state.held.length > MAX_HELD) this.#giveUp(topic, state)
      return
    }
    this.#apply(topic, state, packet)
  }

  /** After a resubscription: what was published meanwhile is only in the streams. */
  repairAll (): void {
    for (const [topic, state] of this.#states) {
      // Only an event this node delivered can be compared (not one that preceded its first read).
      state.verify = state.offset > 0 && state.lastOffset === state.offset
      if (state.held !== undefined) {
        state.again = true
        continue
      }
      state.held = []
      void this.#repair(topic, state)
    }
  }

  /** Resolves true once this node delivered `offset` of the stream, false if the stream has no such event. */
  async reach (topic: string, offset: number): Promise<boolean> {
    const state = this.#states.get(topic)
    if (state === undefined) return false
    if (state.offset >= offset) return true
    const reached = new Promise<boolean>((resolve) => state.waiters.push({ offset, resolve }))
    if (state.held === undefined) {
      state.held = []
      void this.#repair(topic, state)
    }
    return await reached
  }

  #apply (topic: string, state: StreamState, packet: Packet): void {
    const offset = packet.offset as number
    if (packet.epoch === state.epoch) {
      // Already delivered: read back by a repair before it came live.
      if (offset <= state.offset) return
      if (offset === state.offset + 1) {
        this.#deliver(topic, state, packet)
        return
      }
    }
    state.held = [packet]
    void this.#repair(topic, state)
  }

  #deliver (topic: string, state: StreamState, packet: Packet): void {
    state.offset = packet.offset as number
    state.lastOffset = state.offset
    state.lastAt = packet.acceptedAt
    state.lastSum = crc32(packet.frame)
    this.hooks.deliver(topic, packet)
  }

  async #repair (topic: string, state: StreamState): Promise<void> {
    const verifying = state.verify
    let read
    try {
      const after = verifying ? state.offset - 1 : state.offset
      read = await this.bus.read(topic, { after, limit: this.readLimit + (verifying ? 1 : 0), known: state.offset })
    } catch (error) {
      if (this.#states.get(topic) !== state) return
      this.hooks.log.warn({ err: error, topic }, 'stream repair read failed: retrying')
      setTimeout(() => { if (this.#states.get(topic) === state) void this.#repair(topic, state) }, RETRY_MS).unref()
      return
    }
    if (this.#states.get(topic) !== state) return
    if (verifying) state.verify = false
    const { position } = read
    let { offsets, packets } = read
    let diverged = false
    try {
      if (verifying && position.epoch === state.epoch && offsets[0] === state.offset) {
        const last = decodePacket(packets[0] as Buffer)
        diverged = last.acceptedAt !== state.lastAt || crc32(last.frame) !== state.lastSum
        offsets = offsets.slice(1)
        packets = packets.slice(1)
      }
    } catch {
      this.metrics.packetErrors.inc()
      diverged = true
    }
    const missing = position.offset - state.offset
    const complete = !diverged && position.epoch === state.epoch &&
      (missing <= 0 || (offsets.length === missing && offsets[0] === state.offset + 1))
    let packetsRead: Packet[] = []
    try {
      packetsRead = complete ? packets.map((bytes) => decodePacket(bytes)) : []
    } catch {
      this.metrics.packetErrors.inc()
    }
    if (complete && packetsRead.length === offsets.length) {
      if (missing > 0) this.metrics.streamRepairs.inc({ outcome: 'repaired' })
      for (const packet of packetsRead) {
        if ((packet.offset as number) <= state.offset) continue
        this.#deliver(topic, state, packet)
      }
    } else {
      this.metrics.streamRepairs.inc({ outcome: diverged ? 'diverged' : 'closed' })
      this.hooks.log.warn({ topic, epoch: state.epoch, offset: state.offset, position, diverged }, 'stream gap not repairable: its sockets reconnect')
      this.hooks.broken(topic)
      state.epoch = position.epoch
      state.offset = position.offset
      state.lastOffset = 0
      if (diverged) {
        // Its clients' positions name events the stream no longer has: a new epoch makes them resync.
        await this.#newEpoch(topic, state)
        if (this.#states.get(topic) !== state) return
      }
    }
    this.#release(topic, state)
  }

  /** Gives a diverged stream a new epoch (a reader above any top does: see the stores' position()). */
  async #newEpoch (topic: string, state: StreamState): Promise<void> {
    try {
      const { position } = await this.bus.read(topic, { after: Number.MAX_SAFE_INTEGER - 1, limit: 1, known: Number.MAX_SAFE_INTEGER })
      state.epoch = position.epoch
      state.offset = position.offset
    } catch (error) {
      this.hooks.log.warn({ err: error, topic }, 'new epoch for a diverged stream failed: its readers resync on the next repair')
      state.epoch = undefined
    }
  }

  /** Delivers what was held, in order, until it is gone or another gap needs a read. */
  #release (topic: string, state: StreamState): void {
    const held = state.held ?? []
    if (state.again) {
      state.again = false
      void this.#repair(topic, state)
      return
    }
    state.held = undefined
    for (let index = 0; index < held.length; index++) {
      this.#apply(topic, state, held[index] as Packet)
      // A gap among the held packets: the rest wait for the read it started.
      const holding = state.held as Packet[] | undefined
      if (holding !== undefined) {
        for (let rest = index + 1; rest < held.length; rest++) holding.push(held[rest] as Packet)
        return
      }
    }
    // Live again: a waiter whose offset the stream never reached waited for an event that does not exist.
    for (const waiter of state.waiters.splice(0)) waiter.resolve(state.offset >= waiter.offset)
  }

  /** Too much held for one stream (a read that never comes back): its sockets reconnect instead. */
  #giveUp (topic: string, state: StreamState): void {
    state.held = []
    state.epoch = undefined
    this.metrics.streamRepairs.inc({ outcome: 'closed' })
    this.hooks.broken(topic)
  }
}
