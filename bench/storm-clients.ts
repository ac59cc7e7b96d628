import { io, type Socket } from 'socket.io-client'
import WebSocket from 'ws'
import { Ledger } from './storm-tally.js'

/**
 * The clients of the reconnect storm (f), one per system, both on the `ws` library (socket.io-client
 * uses it in Node). Each connects to node A; when A closes it, it reconnects to node B, as a load
 * balancer would send it there, after socket.io-client's own default back-off (1 s ± 50%, doubling up
 * to 5 s), and asks to recover: the relay client with `?since=` (its last offset per stream), the
 * Socket.IO client with its session id and last offset (the library does that itself). Every frame is
 * parsed and entered in the client's Ledger.
 */

export const RECONNECT_DELAY_MS = 1000
export const RECONNECT_DELAY_MAX_MS = 5000
export const RANDOMIZATION = 0.5

/** socket.io-client's Backoff: min(max, delay × 2^attempt), moved by up to ±50%. */
export function backoff (attempt: number): number {
  const base = Math.min(RECONNECT_DELAY_MAX_MS, RECONNECT_DELAY_MS * 2 ** attempt)
  return Math.min(RECONNECT_DELAY_MAX_MS, base + (Math.random() * 2 - 1) * RANDOMIZATION * base)
}

export interface StormClient {
  readonly ledger: Ledger
  /** Resolves when subscribed on node A, or with the reason it was not. */
  readonly opened: Promise<string | undefined>
  stop: () => void
}

const wallClock = (): number => performance.timeOrigin + performance.now()

interface Position { epoch: unknown, offset: number }

interface RelayFrame {
  type?: unknown
  data?: { streams?: Record<string, { epoch?: unknown, offset?: unknown }>, recovered?: unknown, message?: { id?: unknown } }
  stream?: unknown
  offset?: unknown
}

export class RelayStormClient implements StormClient {
  readonly ledger: Ledger
  readonly opened: Promise<string | undefined>
  /** Per stream, the epoch `connected` named and the last offset received. */
  readonly #positions = new Map<string, Position>()
  #socket: WebSocket | undefined
  #stopped = false
  #attempt = 0
  #settle: (error: string | undefined) => void = () => {}

  constructor (chat: number, readonly token: string, readonly portA: number, readonly portB: number) {
    this.ledger = new Ledger(chat)
    this.opened = new Promise((resolve) => { this.#settle = resolve })
    this.#open(portA)
  }

  /** `since` as the relay reads it: base64url of JSON {stream: {epoch, offset}}; absent when no stream was named. */
  since (): string | undefined {
    if (this.#positions.size === 0) return undefined
    return Buffer.from(JSON.stringify(Object.fromEntries(this.#positions))).toString('base64url')
  }

  stop (): void {
    this.#stopped = true
    this.#socket?.terminate()
  }

  #open (port: number): void {
    const since = port === this.portB ? this.since() : undefined
    const url = `ws://127.0.0.1:${port}/chat?token=${this.token}${since === undefined ? '' : `&since=${since}`}`
    const socket = new WebSocket(url, { perMessageDeflate: false })
    this.#socket = socket
    let subscribed = false
    socket.on('message', (bytes: Buffer) => {
      let frame: RelayFrame
      try {
        frame = JSON.parse(bytes.toString('utf8')) as RelayFrame
      } catch {
        return
      }
      if (frame.type === 'connected') {
        subscribed = true
        this.#onConnected(frame, port)
        return
      }
      const offsetKey = typeof frame.stream === 'string' && typeof frame.offset === 'number' ? `${frame.stream}:${frame.offset}` : undefined
      if (offsetKey !== undefined) {
        const position = this.#positions.get(frame.stream as string)
        if (position !== undefined && (frame.offset as number) > position.offset) position.offset = frame.offset as number
      }
      const id = frame.type === 'message_added' && typeof frame.data?.message?.id === 'number' ? frame.data.message.id : undefined
      if (offsetKey !== undefined || id !== undefined) this.ledger.delivery(id, offsetKey, wallClock())
    })
    // The error, when there is one, says more than its 1006 (refused, reset, an HTTP answer instead of 101).
    let failure = ''
    socket.on('error', (error: NodeJS.ErrnoException) => { failure ||= ` (${error.code ?? error.message.slice(0, 60)})` })
    socket.once('close', (code: number) => {
      if (this.#stopped) return
      if (port === this.portA && Number.isNaN(this.ledger.closedAt)) {
        if (!subscribed) return this.#settle(`closed ${code} before connected`)
        this.ledger.closedAt = wallClock()
        this.ledger.closedWith = String(code)
        this.ledger.positionAtClose = this.#positions.size > 0
        this.#attempt = 0
      } else {
        this.ledger.closedAgain(`${code}${failure} ${subscribed ? 'on node B' : 'before connected'}`)
        if (subscribed) this.#attempt = 0
      }
      setTimeout(() => { if (!this.#stopped) this.#open(this.portB) }, backoff(this.#attempt++))
    })
  }

  #onConnected (frame: RelayFrame, port: number): void {
    const streams = frame.data?.streams ?? {}
    const recovered = frame.data?.recovered
    for (const [name, top] of Object.entries(streams)) {
      // A stream first named now, in another epoch or not recovered starts where `connected` says; a
      // recovered one keeps the client's place, and the replay that follows moves it.
      const known = this.#positions.get(name)
      if (known === undefined || known.epoch !== top.epoch || recovered === false) {
        this.#positions.set(name, { epoch: top.epoch, offset: typeof top.offset === 'number' ? top.offset : 0 })
      }
    }
    if (port === this.portA) return this.#settle(undefined)
    if (!Number.isNaN(this.ledger.reconnectedAt)) return
    this.ledger.reconnectedAt = wallClock()
    this.ledger.recovered = typeof recovered === 'boolean' ? recovered : undefined
  }
}

export class SocketIoStormClient implements StormClient {
  readonly ledger: Ledger
  readonly opened: Promise<string | undefined>
  readonly #socket: Socket

  constructor (chat: number, rooms: string, portA: number, portB: number) {
    this.ledger = new Ledger(chat)
    const socket = io(`http://127.0.0.1:${portA}`, {
      transports: ['websocket'],
      forceNew: true,
      query: { rooms },
      reconnectionDelay: RECONNECT_DELAY_MS,
      reconnectionDelayMax: RECONNECT_DELAY_MAX_MS,
      randomizationFactor: RANDOMIZATION
    })
    this.#socket = socket
    this.opened = new Promise((resolve) => {
      socket.once('connect', () => resolve(undefined))
      socket.once('connect_error', (error) => resolve(`connect error: ${error.message}`))
    })
    // socket.io-client also says `disconnect` when a connection ends before its connect ack: tell the two apart.
    let connected = false
    socket.on('connect', () => {
      connected = true
      if (Number.isNaN(this.ledger.closedAt) || !Number.isNaN(this.ledger.reconnectedAt)) return
      this.ledger.reconnectedAt = wallClock()
      this.ledger.recovered = socket.recovered
    })
    socket.on('disconnect', (reason) => {
      const wasConnected = connected
      connected = false
      if (!Number.isNaN(this.ledger.closedAt)) {
        this.ledger.closedAgain(`${reason} ${wasConnected ? 'on node B' : 'before connected'}`)
        return
      }
      this.ledger.closedAt = wallClock()
      this.ledger.closedWith = reason
      // socket.io-client sends its last offset, which only an event broadcast through the adapter carries.
      this.ledger.positionAtClose = this.ledger.offsets.size > 0
      // The Manager opens every attempt from its uri (engine.io-client parses host and port from it anew):
      // pointing it at node B is what a load balancer in front of both nodes does.
      const manager = socket.io as unknown as { uri: string }
      manager.uri = `http://127.0.0.1:${portB}`
    })
    socket.io.on('reconnect_error', (error) => this.ledger.closedAgain(`reconnect error: ${error.message}`))
    socket.on('message_added', (payload: { message?: { id?: unknown } }, offset?: unknown) => {
      const id = typeof payload.message?.id === 'number' ? payload.message.id : undefined
      this.ledger.delivery(id, typeof offset === 'string' ? `socket.io:${offset}` : undefined, wallClock())
    })
  }

  stop (): void {
    this.#socket.disconnect()
  }
}
