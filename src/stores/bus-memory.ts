import { ALREADY_APPENDED, defaultRetention, newEpoch, type Bus, type BusState, type DurableEvent, type PacketHandler, type ReadOptions, type StreamPosition, type StreamRead, type StreamRetention } from './bus.js'
import { BusUnavailableError } from './store-errors.js'
import { durablePacket } from '../protocol/packet.js'
import { Topic } from '../protocol/routing.js'

export interface MemoryBusOptions extends Partial<StreamRetention> {
  /** Bytes of history over all streams; the least recently written streams lose theirs first. */
  maxHistoryBytes?: number
  now?: () => number
}

interface Position {
  epoch: string
  offset: number
  /** The counter of relay-made messages in this chat (standalone mode). */
  numbered: number
  touchedAt: number
}

interface History {
  offsets: number[]
  packets: Buffer[]
  bytes: number
  writtenAt: number
}

const SWEEP_MS = 10_000

/**
 * The embedded bus: one process, delivery in publish order, nothing to connect to. Streams are bounded
 * rings; maps in recency order (re-inserted on use) let the sweep and the byte budget take the oldest
 * first. A stream's epoch is made with its position, so a position swept away never repeats offsets.
 */
export class MemoryBus implements Bus {
  readonly kind = 'memory' as const
  readonly #topics = new Set<string>()
  readonly #positions = new Map<string, Position>()
  readonly #histories = new Map<string, History>()
  /** Once tokens of Bus.append and when they expire, in the order they were taken. */
  readonly #once = new Map<string, number>()
  readonly #retention: StreamRetention
  readonly #maxHistoryBytes: number
  readonly #now: () => number
  readonly #sweep: NodeJS.Timeout
  #historyBytes = 0
  #handler: PacketHandler = () => {}
  #closed = false

  constructor (options: MemoryBusOptions = {}) {
    this.#retention = { ...defaultRetention, ...withoutUndefined(options) }
    this.#maxHistoryBytes = options.maxHistoryBytes ?? 64 * 1024 * 1024
    this.#now = options.now ?? Date.now
    this.#sweep = setInterval(() => this.sweep(), SWEEP_MS)
    this.#sweep.unref()
  }

  isReady (): boolean {
    return !this.#closed
  }

  canAnnounce (): boolean {
    return !this.#closed
  }

  canAppend (): boolean {
    return !this.#closed
  }

  async publish (topic: string, packet: Buffer): Promise<void> {
    if (this.#closed) throw new BusUnavailableError('bus is closed')
    if (this.#topics.has(topic)) this.#handler(topic, packet)
  }

  async append (event: DurableEvent): Promise<number> {
    if (this.#closed) throw new BusUnavailableError('bus is closed')
    if (event.once !== undefined) {
      const now = this.#now()
      if ((this.#once.get(event.once.token) ?? 0) > now) return ALREADY_APPENDED
      this.#once.delete(event.once.token)
      this.#once.set(event.once.token, now + event.once.ttlSeconds * 1000)
    }
    let number = 0
    if (event.numbered !== undefined) {
      const position = this.#position(Topic.chat(event.numbered.chatUuid))
      number = position.numbered += 1
    }
    const payloads = event.payloads.map((pieces) => pieces.join(String(number)))
    const delivered: Array<[string, Buffer]> = []
    for (const { topic, routingHead, payload } of event.appends) {
      const position = this.#position(topic)
      position.offset += 1
      const packet = durablePacket(routingHead, payloads[payload] as string, JSON.stringify(topic), position.epoch, position.offset)
      this.#keep(topic, position.offset, packet)
      delivered.push([topic, packet])
    }
    for (const [topic, packet] of delivered) if (this.#topics.has(topic)) this.#handler(topic, packet)
    return number
  }

  async positions (topics: string[]): Promise<StreamPosition[]> {
    return topics.map((topic) => {
      const { epoch, offset } = this.#position(topic)
      return { epoch, offset }
    })
  }

  async read (topic: string, options: ReadOptions): Promise<StreamRead> {
    const { epoch, offset } = this.#position(topic)
    const history = this.#histories.get(topic)
    const upTo = Math.min(options.upTo ?? offset, offset)
    const read: StreamRead = { position: { epoch, offset }, packets: [], offsets: [] }
    if (history === undefined) return read
    const inRange: number[] = []
    for (let index = 0; index < history.offsets.length; index++) {
      const at = history.offsets[index] as number
      if (at > options.after && at <= upTo) inRange.push(index)
    }
    const chosen = options.newest === true ? inRange.slice(-options.limit) : inRange.slice(0, options.limit)
    for (const index of chosen) {
      read.offsets.push(history.offsets[index] as number)
      read.packets.push(history.packets[index] as Buffer)
    }
    return read
  }

  async subscribe (topic: string): Promise<void> {
    this.#topics.add(topic)
  }

  async unsubscribe (topic: string): Promise<void> {
    this.#topics.delete(topic)
  }

  onPacket (handler: PacketHandler): void {
    this.#handler = handler
  }

  onStateChange (_listener: (state: BusState) => void): void {
    // Always ready until closed: nothing to report.
  }

  async close (): Promise<void> {
    this.#closed = true
    clearInterval(this.#sweep)
    this.#topics.clear()
  }

  /** Forgets histories and positions idle past their retention (oldest first: the maps are in recency order). */
  sweep (): void {
    const now = this.#now()
    // Taken in time order with one TTL (IDEMPOTENCY_TTL_S): the oldest expire first.
    for (const [token, expiresAt] of this.#once) {
      if (expiresAt > now) break
      this.#once.delete(token)
    }
    for (const [topic, history] of this.#histories) {
      if (now - history.writtenAt < this.#retention.ttlSeconds * 1000) break
      this.#dropHistory(topic, history)
    }
    for (const [topic, position] of this.#positions) {
      if (now - position.touchedAt < this.#retention.positionTtlSeconds * 1000) break
      this.#positions.delete(topic)
      const history = this.#histories.get(topic)
      if (history !== undefined) this.#dropHistory(topic, history)
    }
  }

  /** Bytes of history held now (for tests and the budget). */
  get historyBytes (): number {
    return this.#historyBytes
  }

  #position (topic: string): Position {
    let position = this.#positions.get(topic)
    if (position === undefined) position = { epoch: newEpoch(), offset: 0, numbered: 0, touchedAt: 0 }
    else this.#positions.delete(topic)
    position.touchedAt = this.#now()
    this.#positions.set(topic, position)
    return position
  }

  #keep (topic: string, offset: number, packet: Buffer): void {
    if (this.#retention.size === 0) return
    let history = this.#histories.get(topic)
    if (history === undefined) history = { offsets: [], packets: [], bytes: 0, writtenAt: 0 }
    else this.#histories.delete(topic)
    history.writtenAt = this.#now()
    this.#histories.set(topic, history)
    history.offsets.push(offset)
    history.packets.push(packet)
    history.bytes += packet.length
    this.#historyBytes += packet.length
    if (history.offsets.length > this.#retention.size) {
      history.offsets.shift()
      const dropped = history.packets.shift() as Buffer
      history.bytes -= dropped.length
      this.#historyBytes -= dropped.length
    }
    for (const [oldest, oldestHistory] of this.#histories) {
      if (this.#historyBytes <= this.#maxHistoryBytes || oldest === topic) break
      this.#dropHistory(oldest, oldestHistory)
    }
  }

  #dropHistory (topic: string, history: History): void {
    this.#histories.delete(topic)
    this.#historyBytes -= history.bytes
  }
}

function withoutUndefined (options: MemoryBusOptions): Partial<StreamRetention> {
  const retention: Partial<StreamRetention> = {}
  if (options.size !== undefined) retention.size = options.size
  if (options.ttlSeconds !== undefined) retention.ttlSeconds = options.ttlSeconds
  if (options.positionTtlSeconds !== undefined) retention.positionTtlSeconds = options.positionTtlSeconds
  return retention
}
