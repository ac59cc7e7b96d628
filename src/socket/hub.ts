import type { Bus } from '../stores/bus.js'
import type { Connection } from './connection.js'
import type { Metrics } from '../metrics.js'
import { decodePacket, type Outbound, type Packet } from '../protocol/packet.js'
import { Topic, type Audience } from '../protocol/routing.js'
import { SocketIndex } from './socket-index.js'
import { Writer } from './writer.js'

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
  /** Subscriptions in flight, so a second socket on the same topic waits for the same one. */
  readonly #subscribing = new Map<string, Promise<void>>()
  /** The send path of every socket of this hub; what it could not write lands in metrics and logs. */
  readonly writer: Writer

  constructor (readonly bus: Bus, readonly metrics: Metrics, readonly log: HubLogger, fastPath?: boolean) {
    this.writer = new Writer({
      dropped: (connection, reason) => {
        metrics.framesDropped.inc({ reason })
        if (reason !== 'slow_consumer') return
        metrics.slowConsumers.inc()
        const { endpoint, userId } = connection.attributes
        log.warn({ endpoint, connectionId: connection.id, userId }, 'slow consumer closed')
      }
    }, fastPath)
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
   * Subscribes the socket's topics, then indexes it and calls `indexed` in the same synchronous step:
   * nothing reaches the socket before what `indexed` sends (`connected`), and nothing the bus delivers
   * after the subscription is missed. False when the socket was removed meanwhile (not indexed).
   */
  async add (connection: Connection, indexed: () => void): Promise<boolean> {
    this.#adding.add(connection)
    await Promise.all(this.topicsOf(connection).map(async (topic) => await this.retain(topic)))
    if (!this.#adding.delete(connection)) {
      for (const topic of this.topicsOf(connection)) this.release(topic)
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
    indexed()
    return true
  }

  remove (connection: Connection): void {
    // Still subscribing: `add` sees it gone and lets its topics go.
    if (this.#adding.delete(connection)) return
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
    const topics = [Topic.consoles, Topic.operator(attributes.userId)]
    const widgets = attributes.sources?.widgets
    if (widgets === undefined) topics.push(Topic.anyWidget)
    else for (const widget of widgets) topics.push(Topic.widget(widget))
    return topics
  }

  /** Topics this node needs now: what its sockets can receive (the bus holds the same set). */
  topics (): string[] {
    return [...this.#topicRefs.keys()]
  }

  private async retain (topic: string): Promise<void> {
    const refs = this.#topicRefs.get(topic) ?? 0
    this.#topicRefs.set(topic, refs + 1)
    if (refs > 0) return await this.#subscribing.get(topic)
    const subscribing: Promise<void> = this.bus.subscribe(topic).catch((error: unknown) => {
      this.log.error({ err: error, topic }, 'bus subscribe failed')
    }).finally(() => {
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
    const sent = this.deliver(packet.audience, packet, topic)
    if (sent > 0) this.metrics.framesSent.inc(sent)
    this.metrics.fanoutSeconds.observe(Math.max(0, Date.now() - packet.acceptedAt) / 1000)
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
