import { randomUUID } from 'node:crypto'
import { defaultRetention, type Bus, type BusState, type DurableEvent, type PacketHandler, type ReadOptions, type StreamPosition, type StreamRead, type StreamRetention } from './bus.js'
import { BusUnavailableError } from './store-errors.js'
import { listen, type RedisCommands, type RedisLogger } from './redis.js'
import type { SubscriberConnection } from './sharded-subscriber.js'
import { RedisStreams, type ReplicaAcks } from './streams-redis.js'
import type { DurableParts } from '../protocol/packet.js'

export interface RedisBusOptions {
  /** Publishes (and nothing else of the bus); never queues while Redis is away. */
  publisher: RedisCommands
  /** Subscribes; in subscriber mode it can run no other command. */
  subscriber: SubscriberConnection
  /**
   * Redis Cluster: sharded pub/sub (SPUBLISH, and a ShardedSubscriber), each topic's channel and stream
   * keys under one hash tag so every script touches one slot.
   */
  sharded?: boolean
  /** Channel prefix (REDIS_PREFIX): several relays or test runs can share one Redis. */
  prefix: string
  /** Default: defaultRetention. */
  retention?: StreamRetention
  /** Replicas that must hold a durable event before append resolves (REDIS_REPLICA_ACKS); default none. */
  replicaAcks?: ReplicaAcks
  /**
   * After a reconnect, wait this long before acknowledging again. With history, 0: what other nodes miss
   * while they resubscribe, they read back from the streams. Without, pub/sub keeps nothing, so an event
   * published before the other nodes resubscribed would be acknowledged and lost for them.
   */
  settleMs: number
  /** After a reconnect, how long until every node has resubscribed too (see Bus.canAnnounce); default settleMs. */
  announceSettleMs?: number
  /**
   * Durable events are kept in streams every node repairs from (history on): they are acknowledged as
   * soon as the command connection takes them, whatever this node's subscription (see Bus.canAppend).
   * On a cluster, a shard's failover then stops only the streams of that shard.
   */
  appendWhileResubscribing?: boolean
  /**
   * How often the idle subscriber connection is pinged, and a probe published to this node's own probe
   * channel: a subscription that died without its connection closing (a server-side unsubscribe, a
   * proxy that stopped forwarding) shows as a probe not back by the next interval.
   */
  pingIntervalMs: number
  log: RedisLogger
  /** Told when a probe did not come back (the subscriber is then reconnected) and on every resubscription. */
  events?: { probeFailed: () => void, resubscribed: () => void }
}

const SUBSCRIBE_BATCH = 1000

/**
 * A (un)subscribe that failed because the connection is going away needs nothing: the next connection
 * subscribes to the topics held then. An answer from Redis itself (say, NOPERM) is a real failure.
 */
function rethrowRedisReply (error: unknown): void {
  if (error instanceof Error && error.name === 'ReplyError') throw error
}

/**
 * The cluster bus on Redis pub/sub (Centrifuge's broker_redis, socket.io's redis-adapter): one channel
 * per topic under the prefix, a publishing and a subscribing connection, the topics it holds
 * resubscribed by itself after every reconnect. It owns its listeners, not the connections.
 */
export class RedisBus implements Bus {
  readonly kind = 'redis' as const
  readonly #publisher: RedisCommands
  readonly #subscriber: SubscriberConnection
  readonly #sharded: boolean
  readonly #prefix: string
  readonly #prefixBytes: number
  readonly #settleMs: number
  readonly #announceSettleMs: number
  readonly #appendWhileResubscribing: boolean
  /** When the bus last turned ready after a reconnect (the first connect counts as long ago). */
  #readyAt = Number.NEGATIVE_INFINITY
  readonly #streams: RedisStreams
  readonly #log: RedisLogger
  readonly #topics = new Set<string>()
  readonly #stateListeners: Array<(state: BusState) => void> = []
  readonly #detach: Array<() => void> = []
  #handler: PacketHandler = () => {}
  #state: BusState = 'down'
  /** Every held topic is subscribed on the current subscriber connection. */
  #subscribed = false
  /** Bumped on every subscriber (re)connect, so a stale resubscription does not count. */
  #generation = 0
  #connectedOnce = false
  #settleTimer: NodeJS.Timeout | undefined
  readonly #pingTimer: NodeJS.Timeout
  #closed = false
  readonly #reportedErrors = new Set<string>()
  /** This node's probe channels start with it: `<prefix>probe:<uuid>`, sharded `<prefix>{probe:<uuid>:<k>}`. */
  readonly #probeBase: string
  readonly #probeBaseBytes: Buffer
  /** The probe in flight: its channels not back yet, and how many PUBLISHes are still unanswered. */
  #probeInFlight: { pending: Set<string>, unanswered: number } | undefined
  readonly #events: NonNullable<RedisBusOptions['events']>

  constructor (options: RedisBusOptions) {
    this.#publisher = options.publisher
    this.#subscriber = options.subscriber
    this.#prefix = options.prefix
    this.#prefixBytes = Buffer.byteLength(options.prefix)
    this.#sharded = options.sharded ?? false
    this.#settleMs = options.settleMs
    this.#announceSettleMs = options.announceSettleMs ?? options.settleMs
    this.#appendWhileResubscribing = options.appendWhileResubscribing ?? false
    this.#streams = new RedisStreams(options.publisher, options.prefix, options.retention ?? defaultRetention, options.replicaAcks, this.#sharded)
    this.#log = options.log
    this.#events = options.events ?? { probeFailed: () => {}, resubscribed: () => {} }
    this.#probeBase = `${options.prefix}${(options.sharded ?? false) ? '{' : ''}probe:${randomUUID()}`
    this.#probeBaseBytes = Buffer.from(this.#probeBase)
    const { publisher, subscriber } = options
    this.#detach.push(
      listen(publisher, 'ready', () => this.#update()),
      listen(publisher, 'close', () => this.#update()),
      listen(publisher, 'error', (error: Error) => this.#connectionError('publish', error)),
      listen(subscriber, 'ready', () => { this.#resubscribe() }),
      listen(subscriber, 'close', () => this.#subscriberLost()),
      listen(subscriber, 'error', (error: Error) => this.#connectionError('subscribe', error)),
      listen(subscriber, 'messageBuffer', (channel: Buffer, message: Buffer) => this.#receive(channel, message))
    )
    if (subscriber.status === 'ready') this.#resubscribe()
    this.#update()
    // A subscriber only listens: without a command now and then, nothing would notice it went silent.
    this.#pingTimer = setInterval(() => {
      if (subscriber.status === 'ready') subscriber.ping().catch(() => {})
      // After the I/O phase: a probe that arrived while the event loop was blocked is read first.
      setImmediate(() => this.#probe())
    }, options.pingIntervalMs)
    this.#pingTimer.unref()
  }

  isReady (): boolean {
    return this.#state === 'ready' && this.#publisher.status === 'ready'
  }

  canAppend (): boolean {
    if (this.#closed || this.#publisher.status !== 'ready') return false
    return this.#state === 'ready' || this.#appendWhileResubscribing
  }

  canAnnounce (): boolean {
    return this.isReady() && Date.now() - this.#readyAt >= this.#announceSettleMs
  }

  async publish (topic: string, packet: Buffer): Promise<void> {
    if (!this.isReady()) throw new BusUnavailableError('redis is not connected')
    try {
      await this.#publishTo(this.#channel(topic), packet)
    } catch (error) {
      throw new BusUnavailableError(`redis publish failed: ${(error as Error).message}`)
    }
  }

  async append (event: DurableEvent): Promise<number> {
    return await this.#command('append', this.canAppend(), async () => await this.#streams.append(event))
  }

  /** See RedisStreams.durableArgument: a durable event for a presence script to emit. */
  durableArgument (topic: string, parts: DurableParts): Buffer {
    return this.#streams.durableArgument(topic, parts)
  }

  /** Reads need only the command connection: a node repairs while it is still resubscribing. */
  async positions (topics: string[]): Promise<StreamPosition[]> {
    return await this.#command('positions', this.#publisher.status === 'ready', async () => await this.#streams.positions(topics))
  }

  async read (topic: string, options: ReadOptions): Promise<StreamRead> {
    return await this.#command('read', this.#publisher.status === 'ready', async () => await this.#streams.read(topic, options))
  }

  async #command<T> (what: string, ready: boolean, run: () => Promise<T>): Promise<T> {
    if (!ready) throw new BusUnavailableError(`redis ${what}: redis is not connected`)
    try {
      return await run()
    } catch (error) {
      throw new BusUnavailableError(`redis ${what} failed: ${(error as Error).message}`)
    }
  }

  async subscribe (topic: string): Promise<void> {
    this.#topics.add(topic)
    // Not connected: the resubscription on the next 'ready' includes it.
    if (this.#closed || this.#subscriber.status !== 'ready') return
    await this.#subscriber.subscribe(this.#channel(topic)).catch(rethrowRedisReply)
  }

  async unsubscribe (topic: string): Promise<void> {
    if (!this.#topics.delete(topic)) return
    // Not connected: the subscription went with the connection, and the next one will not include it.
    if (this.#closed || this.#subscriber.status !== 'ready') return
    await this.#subscriber.unsubscribe(this.#channel(topic)).catch(rethrowRedisReply)
  }

  onPacket (handler: PacketHandler): void {
    this.#handler = handler
  }

  onStateChange (listener: (state: BusState) => void): void {
    this.#stateListeners.push(listener)
  }

  /** Topics held now (subscribed, or to subscribe on the next connect). */
  topics (): string[] {
    return [...this.#topics]
  }

  /** Unsubscribes what it holds and removes exactly the listeners it added; the connections stay open. */
  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearTimeout(this.#settleTimer)
    clearInterval(this.#pingTimer)
    this.#state = 'down'
    const channels = [...this.#topics].map((topic) => this.#channel(topic))
    channels.push(...this.#probeChannels())
    this.#topics.clear()
    if (this.#subscriber.status === 'ready') {
      await this.#subscriber.unsubscribe(...channels).catch((error: unknown) => {
        this.#log.warn({ err: error }, 'redis unsubscribe on close failed')
      })
    }
    for (const detach of this.#detach.splice(0)) detach()
  }

  /** One probe channel, or on a cluster one per master (each subscription lives on its own connection). */
  #probeChannels (): string[] {
    if (!this.#sharded) return [this.#probeBase]
    return this.#subscriber.probeChannels?.((index) => `${this.#probeBase}:${index}}`) ?? [`${this.#probeBase}}`]
  }

  /** Publishes a probe, or, if the last one never came back, replaces the subscriber connection. */
  #probe (): void {
    if (this.#closed || !this.#subscribed || this.#publisher.status !== 'ready') {
      this.#probeInFlight = undefined
      return
    }
    const last = this.#probeInFlight
    if (last !== undefined) {
      // Still queued behind slow commands (a WAIT): the publisher's delay, not the subscription's.
      if (last.unanswered === 0 && last.pending.size > 0) this.#probeFailed(`${[...last.pending].join(', ')} did not come back`)
      else if (last.pending.size === 0) this.#probeInFlight = undefined
      if (this.#probeInFlight !== undefined) return
    }
    const channels = this.#probeChannels()
    const probe = { pending: new Set(channels), unanswered: channels.length }
    const generation = this.#generation
    this.#probeInFlight = probe
    for (const channel of channels) {
      this.#publishTo(channel, String(Date.now())).then((receivers) => {
        if (this.#probeInFlight !== probe) return
        probe.unanswered -= 1
        // Redis knows of no subscriber on that channel: no need to wait for the next interval.
        if (receivers === 0 && generation === this.#generation && this.#subscribed) this.#probeFailed(`redis has no subscriber on ${channel}`)
      }, () => {
        // Not the subscription's fault: the publisher's own failure shows elsewhere.
        if (this.#probeInFlight === probe) this.#probeInFlight = undefined
      })
    }
  }

  #probeFailed (why: string): void {
    this.#probeInFlight = undefined
    this.#events.probeFailed()
    this.#log.warn({ why }, 'redis bus probe failed: reconnecting the subscriber')
    // Its close turns the bus down (/ready 503); its next ready resubscribes and the streams repair.
    this.#subscriber.disconnect(true)
  }

  #channel (topic: string): string {
    return this.#sharded ? `${this.#prefix}{${topic}}` : this.#prefix + topic
  }

  async #publishTo (channel: string, message: Buffer | string): Promise<number> {
    return Number(this.#sharded ? await this.#publisher.spublish(channel, message) : await this.#publisher.publish(channel, message))
  }

  #receive (channel: Buffer, message: Buffer): void {
    if (channel.subarray(0, this.#probeBaseBytes.length).equals(this.#probeBaseBytes)) {
      this.#probeInFlight?.pending.delete(channel.toString())
      return
    }
    // Sharded: `<prefix>{<topic>}`.
    const topic = this.#sharded ? channel.toString('utf8', this.#prefixBytes + 1, channel.length - 1) : channel.toString('utf8', this.#prefixBytes)
    if (!this.#topics.has(topic)) return
    this.#handler(topic, message)
  }

  /** Sends every held topic in one go (no await between batches: later (un)subscribes queue after). */
  #resubscribe (): void {
    const generation = ++this.#generation
    this.#subscribed = false
    const channels = [...this.#topics].map((topic) => this.#channel(topic))
    const probes = this.#probeChannels()
    channels.push(...probes)
    const batches: Array<Promise<unknown>> = []
    for (let start = 0; start < channels.length; start += SUBSCRIBE_BATCH) {
      batches.push(this.#subscriber.subscribe(...channels.slice(start, start + SUBSCRIBE_BATCH)))
    }
    Promise.all(batches).then(() => {
      if (generation !== this.#generation || this.#closed) return
      this.#subscribed = true
      this.#probeInFlight = undefined
      this.#events.resubscribed()
      if (channels.length > probes.length) this.#log.info({ topics: channels.length - probes.length }, 'redis bus resubscribed')
      this.#update()
    }, (error: unknown) => {
      // The connection dropped meanwhile; its next 'ready' resubscribes again.
      this.#log.warn({ err: error, topics: channels.length }, 'redis resubscribe failed')
    })
  }

  #subscriberLost (): void {
    this.#generation += 1
    this.#subscribed = false
    this.#update()
  }

  #connectionError (role: string, error: Error): void {
    // One line per connection and outage, not one per reconnect attempt.
    if (this.#reportedErrors.has(role)) return
    this.#reportedErrors.add(role)
    this.#log.warn({ err: error, role }, 'redis connection error')
  }

  /** Recomputes the state from both connections; reports transitions only. */
  #update (): void {
    if (this.#closed) return
    const connected = this.#publisher.status === 'ready' && this.#subscriber.status === 'ready' && this.#subscribed
    if (!connected) {
      clearTimeout(this.#settleTimer)
      this.#settleTimer = undefined
      this.#setState('down')
      return
    }
    this.#reportedErrors.clear()
    if (this.#state === 'ready' || this.#settleTimer !== undefined) return
    if (!this.#connectedOnce) {
      this.#connectedOnce = true
      this.#setState('ready')
      return
    }
    this.#readyAt = Date.now()
    this.#settleTimer = setTimeout(() => {
      this.#settleTimer = undefined
      const stillConnected = this.#publisher.status === 'ready' && this.#subscriber.status === 'ready' && this.#subscribed
      if (stillConnected && !this.#closed) this.#setState('ready')
    }, this.#settleMs)
    this.#settleTimer.unref()
  }

  #setState (state: BusState): void {
    if (state === this.#state) return
    this.#state = state
    for (const listener of this.#stateListeners) listener(state)
  }
}
