import type { Bus, StreamPosition } from '../stores/bus.js'
import type { Connection } from './connection.js'
import type { Metrics } from '../metrics.js'
import { decodePacket, type Outbound, type Packet } from '../protocol/packet.js'
import { CloseCode } from '../protocol/protocol.js'
import { baseTopic, lanesOf, Topic, type Audience } from '../protocol/routing.js'
import { SocketIndex, type Sockets } from './socket-index.js'
import { StreamTracker } from './stream-tracker.js'
import { FrameHold, Writer } from './writer.js'

export interface HubOptions {
  /** Most events a repair reads back for one stream (REPLAY_LIMIT); a bigger gap closes its sockets. */
  readLimit?: number
  /** Sockets of a stream that broke are closed over this window (DRAIN_WINDOW_MS), not all at once. */
  closeWindowMs?: number
  /** False: always write through ws.send (see Writer). */
  fastPath?: boolean
  /** Console lanes (CONSOLE_LANES, see laned in routing.ts): every console reads all of them. */
  lanes?: number
}

/** Where each stream a socket reads stands when it is indexed: `connected.streams`. */
export type StreamPositions = Record<string, StreamPosition>

export interface HubLogger {
  info: (object: object, message: string) => void
  warn: (object: object, message: string) => void
  error: (object: object, message: string) => void
}

/**
 * The sockets of this node, indexed so a delivery touches only its candidates (chat room, operator id,
 * console widget), and the bus topics those sockets need. This file is the fan-out hot path.
 */
export class Hub {
  readonly #chatRooms = new SocketIndex()
  readonly #consoles = new Set<Connection>()
  readonly #consolesByOperator = new SocketIndex()
  readonly #consolesByWidget = new SocketIndex()
  /** Consoles without a widget filter: they see every widget. */
  readonly #consolesAnyWidget = new Set<Connection>()
  readonly #topicRefs = new Map<string, number>()
  /** Sockets whose topics are being subscribed: indexed once they are. */
  readonly #adding = new Set<Connection>()
  /** Removed while `add` was subscribing: `add` answers false for them, not an error. */
  readonly #removed = new WeakSet<Connection>()
  /** Subscriptions in flight, so a second socket on the same topic waits for the same one. */
  readonly #subscribing = new Map<string, Promise<void>>()
  /** The send path of every socket of this hub; what it could not write lands in metrics and logs. */
  readonly writer: Writer
  readonly streams: StreamTracker
  readonly #closeWindowMs: number
  readonly #lanes: number

  constructor (readonly bus: Bus, readonly metrics: Metrics, readonly log: HubLogger, options: HubOptions = {}) {
    this.#closeWindowMs = options.closeWindowMs ?? 5000
    this.#lanes = options.lanes ?? 1
    this.streams = new StreamTracker(bus, {
      deliver: (topic, packet) => this.#deliverPacket(topic, packet),
      broken: (topic) => this.#closeReaders(topic),
      log
    }, metrics, options.readLimit ?? 300)
    bus.onStateChange((state) => { if (state === 'ready') this.streams.repairAll() })
    this.writer = new Writer({
      dropped: (connection, reason) => {
        metrics.framesDropped.inc({ reason })
        if (reason !== 'slow_consumer') return
        metrics.slowConsumers.inc()
        const { endpoint, userId } = connection.attributes
        log.warn({ endpoint, connectionId: connection.id, userId }, 'slow consumer closed')
      }
    }, options.fastPath)
    bus.onPacket((topic, bytes) => this.receive(topic, bytes))
  }

  get size (): number {
    return this.#consoles.size + this.#chatRooms.size
  }

  * connections (): Iterable<Connection> {
    yield * this.#consoles
    yield * this.#chatRooms.values()
  }

  /**
   * Subscribes the socket's topics and learns where their streams stand, then indexes it and calls
   * `indexed` with those positions in the same synchronous step: nothing reaches the socket before what
   * `indexed` sends (`connected`, or a hold), and every durable event after the positions reaches it.
   * False when the socket was removed meanwhile (not indexed); rejects when a position could not be read.
   */
  async add (connection: Connection, indexed: (positions: StreamPositions) => void): Promise<boolean> {
    this.#adding.add(connection)
    const topics = this.topicsOf(connection)
    const retained = await Promise.allSettled(topics.map(async (topic) => await this.retain(topic)))
    const positions: StreamPositions = {}
    for (const topic of topics) {
      const position = this.streams.position(topic)
      if (position !== undefined) positions[topic] = position
    }
    if (!this.#adding.delete(connection) || Object.keys(positions).length !== topics.length) {
      for (const topic of topics) this.release(topic)
      const failed = retained.find((result) => result.status === 'rejected')
      if (failed !== undefined || Object.keys(positions).length !== topics.length) {
        if (this.#removed.delete(connection)) return false
        throw new Error(`stream positions unavailable: ${String((failed as PromiseRejectedResult | undefined)?.reason ?? 'not tracked')}`)
      }
      return false
    }
    const { attributes } = connection
    if (attributes.endpoint === 'chat' && attributes.chatUuid !== undefined) {
      this.#chatRooms.add(attributes.chatUuid, connection)
    } else {
      this.#consoles.add(connection)
      this.#consolesByOperator.add(attributes.userId, connection)
      const widgets = attributes.sources?.widgets
      if (widgets === undefined) this.#consolesAnyWidget.add(connection)
      else for (const widget of widgets) this.#consolesByWidget.add(widget, connection)
    }
    indexed(positions)
    return true
  }

  remove (connection: Connection): void {
    // Still subscribing: `add` sees it gone and lets its topics go.
    if (this.#adding.delete(connection)) {
      this.#removed.add(connection)
      return
    }
    const { attributes } = connection
    if (attributes.endpoint === 'chat' && attributes.chatUuid !== undefined) {
      if (!this.#chatRooms.delete(attributes.chatUuid, connection)) return
    } else {
      if (!this.#consoles.delete(connection)) return
      this.#consolesByOperator.delete(attributes.userId, connection)
      this.#consolesAnyWidget.delete(connection)
      for (const widget of attributes.sources?.widgets ?? []) this.#consolesByWidget.delete(widget, connection)
    }
    for (const topic of this.topicsOf(connection)) this.release(topic)
  }

  /** What a socket can receive, as bus topics (see Topic and audienceTopics in routing.ts). */
  topicsOf (connection: Connection): string[] {
    const { attributes } = connection
    if (attributes.endpoint === 'chat' && attributes.chatUuid !== undefined) return [Topic.chat(attributes.chatUuid)]
    const topics = [...lanesOf(Topic.consoles, this.#lanes), Topic.operator(attributes.userId)]
    const widgets = attributes.sources?.widgets
    if (widgets === undefined) topics.push(...lanesOf(Topic.anyWidget, this.#lanes))
    else for (const widget of widgets) topics.push(...lanesOf(Topic.widget(widget), this.#lanes))
    return topics
  }

  /** Topics this node needs now: what its sockets can receive (the bus holds the same set). */
  topics (): string[] {
    return [...this.#topicRefs.keys()]
  }

  /** Holds a topic for a socket: the first holder subscribes it and reads its stream's position. */
  private async retain (topic: string): Promise<void> {
    const refs = this.#topicRefs.get(topic) ?? 0
    this.#topicRefs.set(topic, refs + 1)
    const pending = this.#subscribing.get(topic)
    if (refs > 0 && (pending !== undefined || this.streams.has(topic))) return await pending
    // The first holder, or the first since reading the position failed for the sockets before.
    const subscribing: Promise<void> = (refs > 0 ? Promise.resolve() : this.bus.subscribe(topic)).catch((error: unknown) => {
      this.log.error({ err: error, topic }, 'bus subscribe failed')
    }).then(async () => await this.streams.open(topic)).finally(() => {
      // A later subscription of the same topic (after a release) is not this one's to clear.
      if (this.#subscribing.get(topic) === subscribing) this.#subscribing.delete(topic)
    })
    this.#subscribing.set(topic, subscribing)
    await subscribing
  }

  private release (topic: string): void {
    const refs = (this.#topicRefs.get(topic) ?? 0) - 1
    if (refs > 0) {
      this.#topicRefs.set(topic, refs)
      return
    }
    this.#topicRefs.delete(topic)
    this.streams.close(topic)
    this.bus.unsubscribe(topic).catch((error: unknown) => {
      this.log.warn({ err: error, topic }, 'bus unsubscribe failed')
    })
  }

  /** A packet from the bus: decode the header once, write the same bytes to every admitted socket. */
  receive (topic: string, bytes: Buffer): void {
    let packet: Packet
    try {
      packet = decodePacket(bytes)
    } catch (error) {
      this.metrics.packetErrors.inc()
      this.log.error({ err: error, topic }, 'undecodable bus packet dropped')
      return
    }
    if (packet.offset === undefined) this.#deliverPacket(topic, packet)
    else {
      packet.stream = topic
      this.streams.accept(topic, packet)
    }
  }

  #deliverPacket (topic: string, packet: Packet): void {
    const sent = this.deliver(packet.audience, packet, baseTopic(topic, this.#lanes))
    if (sent > 0) this.metrics.framesSent.inc(sent)
    this.metrics.fanoutSeconds.observe(Math.max(0, Date.now() - packet.acceptedAt) / 1000)
  }

  /** The sockets of this node that read a topic's stream (see topicsOf). */
  readersOf (laneTopic: string): Connection[] {
    const topic = baseTopic(laneTopic, this.#lanes)
    const list = (sockets: Sockets | undefined): Connection[] =>
      sockets === undefined ? [] : sockets instanceof Set ? [...sockets] : [sockets]
    if (topic === Topic.consoles) return [...this.#consoles]
    if (topic === Topic.anyWidget) return [...this.#consolesAnyWidget]
    for (const [prefix, index] of [['chat:', this.#chatRooms], ['operator:', this.#consolesByOperator], ['widget:', this.#consolesByWidget]] as const) {
      if (topic.startsWith(prefix)) return list(index.get(topic.slice(prefix.length)))
    }
    return []
  }

  /**
   * A stream broke: its readers get nothing more from it (their frames are dropped, so none skips an
   * offset) and are closed with 1012 over the close window, so their clients reconnect with `since`.
   */
  #closeReaders (topic: string): void {
    for (const connection of this.readersOf(topic)) {
      if (connection.hold?.discard === true) continue
      connection.hold = new FrameHold(0, true)
      this.metrics.repairCloses.inc()
      const timer = setTimeout(() => connection.close(CloseCode.restarting, 'stream gap: reconnect with since'), Math.random() * this.#closeWindowMs)
      timer.unref()
    }
  }

  /**
   * Returns how many sockets the frame was written to. `topic` names the lane a 'sources' packet came
   * on (each lane reaches its own consoles); without it, every admitted console gets the frame.
   */
  deliver (audience: Audience, frame: Outbound, topic?: string): number {
    switch (audience.scope) {
      case 'chat':
        return this.writer.fanOut(this.#chatRooms.get(audience.chat), audience, frame)
      case 'operator':
        return this.writer.fanOut(this.#consolesByOperator.get(audience.operatorId), audience, frame)
      case 'broadcast':
        return this.writer.fanOut(this.#consoles, audience, frame)
      case 'sources': {
        const widget = audience.chat.widget
        if (widget === undefined) return this.writer.fanOut(this.#consoles, audience, frame)
        if (topic === Topic.anyWidget) return this.writer.fanOut(this.#consolesAnyWidget, audience, frame)
        if (topic !== undefined) return this.writer.fanOut(this.#consolesByWidget.get(widget), audience, frame)
        return this.writer.fanOut(this.#consolesAnyWidget, audience, frame) +
          this.writer.fanOut(this.#consolesByWidget.get(widget), audience, frame)
      }
      default: {
        const unknownAudience: never = audience
        this.log.error({ audience: unknownAudience }, 'packet with unknown audience dropped')
        return 0
      }
    }
  }
}
