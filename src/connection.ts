import { randomUUID } from 'node:crypto'
import { Socket } from 'node:net'
import WebSocket from 'ws'
import { CloseCode, type ServerFrame, type User } from './protocol.js'
import type { SocketAttributes } from './routing.js'

export interface ConnectionLimits {
  maxBufferedBytes: number
  ratePerSecond: number
  burst: number
  abuseStrikes: number
}

const STRIKE_WINDOW_MS = 10_000
const CLOSE_GRACE_MS = 1_000
const TEXT = { binary: false } as const

/** What the fast send path reads of a `ws` WebSocket (ws 8): its TCP socket and its sender's state. */
interface WsInternals {
  _socket?: unknown
  _sender?: { _state?: unknown } | null
}
/** ws's Sender is idle (not compressing, not reading a Blob): nothing is queued ahead of a direct write. */
const SENDER_IDLE = 0

/**
 * A socket's first frame in a turn of the event loop is written at once (a lone event leaves with no
 * delay); later frames in the same turn are corked until the turn's I/O has been handled, so under load
 * the frames of every event accepted meanwhile leave in one writev per socket instead of one syscall each.
 */
let turn = 0
let turnScheduled = false
const corked: Connection[] = []

function endTurn (): void {
  turnScheduled = false
  turn += 1
  for (let index = 0; index < corked.length; index++) (corked[index] as Connection).uncork()
  corked.length = 0
}

export type DropReason = 'closing' | 'slow_consumer'

/** What a connection reports to its owner; one object shared by every connection. */
export interface ConnectionHooks {
  /** A frame was not written: the socket is closing, or it overflowed (and is now closing with 1013). */
  dropped: (connection: Connection, reason: DropReason) => void
}

/** One authenticated socket: its routing attributes, its send path with backpressure, its rate limit. */
export class Connection {
  readonly id = randomUUID()
  /** When the socket was admitted, ms since epoch. */
  readonly connectedAt = Date.now()
  /** Cleared on each ping, set by the pong; a socket still false at the next ping is dead. */
  alive = true
  closeCode: number | undefined
  #tokens: number
  #refilledAt = Date.now()
  #strikes = 0
  #strikeWindowStart = Date.now()
  /** The TCP socket under ws, when frames may be written to it directly (no extension negotiated). */
  readonly #stream: Socket | undefined
  readonly #sender: { _state?: unknown } | undefined
  /** The turn (see `endTurn`) of this socket's last direct write; while it is the current one, writes cork. */
  #turn = -1
  #corked = false
  /** Bytes written while corked this turn: queued by us, not a backlog the peer failed to read. */
  #corkedBytes = 0
  /** Frames not written because the socket was already closing (reported in its close log line). */
  droppedWhileClosing = 0

  constructor (
    readonly socket: WebSocket,
    readonly attributes: SocketAttributes,
    readonly user: User,
    readonly limits: ConnectionLimits,
    readonly hooks: ConnectionHooks
  ) {
    this.#tokens = limits.burst
    const internals = socket as unknown as WsInternals
    const direct = internals._socket instanceof Socket && typeof internals._sender?._state === 'number' && socket.extensions === ''
    this.#stream = direct ? internals._socket as Socket : undefined
    this.#sender = direct ? internals._sender ?? undefined : undefined
  }

  /**
   * Writes a pre-serialized frame; false when it was not written. `wire`, when given, is the same frame
   * already framed for WebSocket (see packet.ts): it goes to the TCP socket as is, the bytes shared by
   * every receiver. ws is bypassed only while its sender is idle, so nothing it queued is overtaken.
   */
  send (payload: Buffer, wire?: Buffer): boolean {
    const socket = this.socket
    if (socket.readyState !== WebSocket.OPEN) {
      // Before the upgrade completes nothing is sent here; after it, the socket is closing.
      if (socket.readyState !== WebSocket.CONNECTING) {
        this.droppedWhileClosing += 1
        this.hooks.dropped(this, 'closing')
      }
      return false
    }
    if (socket.bufferedAmount - this.#corkedBytes > this.limits.maxBufferedBytes) {
      this.close(CloseCode.slowConsumer, 'slow consumer')
      this.hooks.dropped(this, 'slow_consumer')
      return false
    }
    const stream = this.#stream
    if (wire === undefined || stream === undefined || this.#sender?._state !== SENDER_IDLE) {
      socket.send(payload, TEXT)
      return true
    }
    if (!turnScheduled) {
      turnScheduled = true
      setImmediate(endTurn)
    }
    if (this.#turn !== turn) {
      this.#turn = turn
    } else {
      if (!this.#corked) {
        this.#corked = true
        stream.cork()
        corked.push(this)
      }
      this.#corkedBytes += wire.length
    }
    stream.write(wire)
    return true
  }

  /** Lets this turn's frames go (see `corked`). */
  uncork (): void {
    this.#corked = false
    this.#corkedBytes = 0
    this.#stream?.uncork()
  }

  sendFrame (frame: ServerFrame): boolean {
    return this.send(Buffer.from(JSON.stringify(frame)))
  }

  /** Closes with a code, and cuts the socket if the peer does not complete the close handshake. */
  close (code: number, reason: string): void {
    if (this.closeCode !== undefined) return
    this.closeCode = code
    const socket = this.socket
    if (socket.readyState === WebSocket.CLOSED) return
    socket.close(code, reason)
    const timer = setTimeout(() => socket.terminate(), CLOSE_GRACE_MS)
    timer.unref()
    socket.once('close', () => clearTimeout(timer))
  }

  /** Token bucket: true when a client event may proceed now. */
  takeToken (now = Date.now()): boolean {
    const elapsed = (now - this.#refilledAt) / 1000
    this.#refilledAt = now
    this.#tokens = Math.min(this.limits.burst, this.#tokens + elapsed * this.limits.ratePerSecond)
    if (this.#tokens < 1) return false
    this.#tokens -= 1
    return true
  }

  /** Counts a rejected or invalid frame; true when the socket has abused its allowance. */
  strike (now = Date.now()): boolean {
    if (now - this.#strikeWindowStart > STRIKE_WINDOW_MS) {
      this.#strikeWindowStart = now
      this.#strikes = 0
    }
    this.#strikes += 1
    return this.#strikes >= this.limits.abuseStrikes
  }
}
