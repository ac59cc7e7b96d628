import { Emitter } from './emitter.js'
import { Liveness } from './liveness.js'
import { Backoff, CLIENT_TIMEOUT, closeDecision } from './policy.js'
import { detach, OPEN, PING, socketUrl, systemClock } from './socket.js'
import { StreamTracker } from './streams.js'
import type {
  Clock, CommonOptions, ConnectionState, EventData, NetworkEvents, RelayClient, SdkEvents, StateChange, WebSocketLike
} from './types.js'

/** A relay → client frame before it is known to be one of SPEC's. */
export interface IncomingFrame { type: string, data: unknown, stream?: unknown, offset?: unknown }

/** A frame waiting for the connection (sent when `connected` arrives). */
export interface Queued { json: string }

/**
 * One logical connection to a relay endpoint over successive sockets: connect, the close-code policy
 * and backoff, liveness pings, online/offline, recovery positions, and the typed events.
 */
export abstract class RelayConnection<Events extends SdkEvents> implements RelayClient<Events> {
  protected readonly clock: Clock
  protected readonly random: () => number
  readonly #emitter = new Emitter<Events>()
  readonly #streams = new StreamTracker()
  readonly #backoff: Backoff
  readonly #WebSocket: new (url: string) => WebSocketLike
  readonly #network: NetworkEvents | undefined
  readonly #outbox: Queued[] = []
  #state: ConnectionState = 'disconnected'
  #socket: WebSocketLike | undefined
  /** Bumped by every attempt and every stop, so a late getToken() or socket event of an old attempt is ignored. */
  #attempt = 0
  #stopped = false
  #offline = false
  #everConnected = false
  /** 4401 closes since the last `connected`. */
  #badTokens = 0
  #connectedAt: number | undefined
  #reconnectTimer: unknown
  #connectTimer: unknown
  readonly #liveness: Liveness

  constructor (
    readonly path: '/chat' | '/broadcast',
    readonly options: CommonOptions & { history?: number },
    /** Frame types handed to the app's handlers. */
    readonly events: ReadonlySet<string>
  ) {
    this.clock = options.clock ?? systemClock
    this.random = options.random ?? Math.random
    this.#backoff = new Backoff(options.backoff?.minMs ?? 500, options.backoff?.maxMs ?? 20_000, this.random)
    const WebSocketClass = options.WebSocket ?? (globalThis as { WebSocket?: new (url: string) => WebSocketLike }).WebSocket
    if (WebSocketClass === undefined) throw new TypeError('no global WebSocket: pass one as options.WebSocket (on Node 20, the ws package)')
    this.#WebSocket = WebSocketClass
    this.#liveness = new Liveness(this.clock, options.pingIntervalMs ?? 25_000, options.pongTimeoutMs ?? 10_000,
      () => this.#socket?.send(PING), () => { this.#abandon('no answer to ping') })
    // An unusable url fails here, not on every attempt.
    void new URL(options.url)
    const global = globalThis as Partial<NetworkEvents>
    this.#network = options.network ?? (typeof global.addEventListener === 'function' ? global as NetworkEvents : undefined)
  }

  get state (): ConnectionState {
    return this.#state
  }

  on<K extends keyof Events & string> (event: K, handler: (data: Events[K]) => void): () => void {
    return this.#emitter.on(event, handler)
  }

  /**
   * Starts the first attempt (after the subclass is constructed, so its fields exist), in a microtask:
   * handlers added right after connectChat() see the first `connecting`.
   */
  start (): this {
    this.#network?.addEventListener('online', this.#onOnline)
    this.#network?.addEventListener('offline', this.#onOffline)
    this.#state = 'connecting'
    queueMicrotask(() => {
      if (this.#stopped) return
      this.#emitter.emit('state', { state: 'connecting' })
      void this.#open()
    })
    return this
  }

  close (): void {
    this.#stop(1000, 'client closed')
  }

  /** Sends now when connected; otherwise queues it (`queue`) or drops it. False: dropped. */
  protected transmit (frame: object, queue: boolean): boolean | Queued {
    const json = JSON.stringify(frame)
    if (this.#stopped) return false
    if (this.#state === 'connected' && this.#socket?.readyState === OPEN) {
      this.#socket.send(json)
      return true
    }
    if (!queue) return false
    const entry = { json }
    this.#outbox.push(entry)
    return entry
  }

  protected unqueue (entry: Queued): void {
    const index = this.#outbox.indexOf(entry)
    if (index >= 0) this.#outbox.splice(index, 1)
  }

  /** Every new frame, before the app's handlers see it. */
  protected frameReceived (_frame: IncomingFrame): void {}

  /** The connection stopped for good. */
  protected stopped (_reason: string): void {}

  async #open (): Promise<void> {
    this.#reconnectTimer = this.#clear(this.#reconnectTimer)
    const attempt = ++this.#attempt
    this.#setState({ state: 'connecting' })
    let token: string
    try {
      token = await this.options.getToken()
    } catch {
      if (attempt === this.#attempt) this.#closed(undefined, 'getToken failed')
      return
    }
    if (attempt !== this.#attempt) return
    let socket: WebSocketLike
    try {
      // A reconnect recovers (since); history only on the first connect.
      const recovery = this.#everConnected ? { since: this.#streams.since() } : { history: this.options.history }
      socket = new this.#WebSocket(socketUrl(this.options.url, this.path, token, recovery))
    } catch {
      return this.#closed(undefined, 'WebSocket failed')
    }
    this.#socket = socket
    socket.onmessage = (event) => { if (this.#socket === socket) this.#received(event.data) }
    socket.onclose = (event) => {
      if (this.#socket !== socket) return
      this.#socket = undefined
      this.#closed(event.code, event.reason)
    }
    // A close always follows an error; ws throws on an error nobody listens to.
    socket.onerror = () => {}
    this.#connectTimer = this.clock.setTimeout(() => { this.#abandon('no connected frame') }, this.options.connectTimeoutMs ?? 10_000)
  }

  #received (data: unknown): void {
    if (typeof data !== 'string') return
    let frame: unknown
    try {
      frame = JSON.parse(data)
    } catch {
      return
    }
    if (typeof frame !== 'object' || frame === null || typeof (frame as IncomingFrame).type !== 'string') return
    const incoming = frame as IncomingFrame
    this.#liveness.heard()
    if (incoming.type === 'connected') return this.#welcome(incoming.data as EventData<'connected'>)
    if (typeof incoming.stream === 'string' && typeof incoming.offset === 'number' &&
      !this.#streams.accept(incoming.stream, incoming.offset)) return
    this.frameReceived(incoming)
    if (this.events.has(incoming.type)) this.#emitter.emit(incoming.type, incoming.data)
  }

  #welcome (data: EventData<'connected'>): void {
    const reconnect = this.#everConnected
    const recovered = data.recovered === true
    this.#streams.connected(data.streams ?? {}, recovered, !reconnect && (this.options.history ?? 0) > 0)
    this.#everConnected = true
    this.#badTokens = 0
    this.#connectedAt = this.clock.now()
    this.#connectTimer = this.#clear(this.#connectTimer)
    this.#liveness.start()
    this.#setState({ state: 'connected' })
    this.#emitter.emit('connected', data)
    if (reconnect) this.#emitter.emit(recovered ? 'recovered' : 'resync', {})
    for (const entry of this.#outbox.splice(0)) this.#socket?.send(entry.json)
  }

  /** Gives up on the current socket (silent, or offline) as if it had closed with CLIENT_TIMEOUT. */
  #abandon (reason: string): void {
    const socket = this.#socket
    if (socket === undefined) return
    this.#socket = undefined
    detach(socket, CLIENT_TIMEOUT, reason)
    this.#closed(CLIENT_TIMEOUT, reason)
  }

  /** The current attempt ended: apply the close-code policy. */
  #closed (code: number | undefined, reason: string): void {
    this.#clearSocketTimers()
    if (this.#connectedAt !== undefined && this.clock.now() - this.#connectedAt >= (this.options.backoff?.stableMs ?? 10_000)) {
      this.#backoff.reset()
    }
    this.#connectedAt = undefined
    const decision = closeDecision(code, this.#badTokens)
    if (code === 4401) this.#badTokens += 1
    const delay = this.#backoff.delayFor(decision)
    if (delay === undefined) return this.#stop(code, reason)
    this.#setState({ state: 'disconnected', code, reason, willReconnect: true })
    // Offline: the `online` event reconnects.
    if (!this.#offline) this.#reconnectTimer = this.clock.setTimeout(() => { void this.#open() }, delay)
  }

  #stop (code: number | undefined, reason: string): void {
    if (this.#stopped) return
    this.#stopped = true
    this.#attempt += 1
    this.#clearSocketTimers()
    this.#reconnectTimer = this.#clear(this.#reconnectTimer)
    this.#network?.removeEventListener('online', this.#onOnline)
    this.#network?.removeEventListener('offline', this.#onOffline)
    const socket = this.#socket
    this.#socket = undefined
    if (socket !== undefined) detach(socket, 1000, reason)
    this.#outbox.length = 0
    this.#setState({ state: 'disconnected', code, reason, willReconnect: false })
    this.stopped(reason)
  }

  readonly #onOffline = (): void => {
    if (this.#stopped || this.#offline) return
    this.#offline = true
    this.#reconnectTimer = this.#clear(this.#reconnectTimer)
    if (this.#socket !== undefined) return this.#abandon('offline')
    // Between attempts, or waiting for getToken(): drop that attempt.
    this.#attempt += 1
    this.#setState({ state: 'disconnected', code: CLIENT_TIMEOUT, reason: 'offline', willReconnect: true })
  }

  readonly #onOnline = (): void => {
    if (this.#stopped || !this.#offline) return
    this.#offline = false
    void this.#open()
  }

  #setState (change: StateChange): void {
    if (change.state === this.#state && change.state !== 'disconnected') return
    this.#state = change.state
    this.#emitter.emit('state', change)
  }

  #clearSocketTimers (): void {
    this.#connectTimer = this.#clear(this.#connectTimer)
    this.#liveness.stop()
  }

  #clear (handle: unknown): undefined {
    if (handle !== undefined) this.clock.clearTimeout(handle)
    return undefined
  }
}
