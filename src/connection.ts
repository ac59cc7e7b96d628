import { randomUUID } from 'node:crypto'
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

/** One authenticated socket: its routing attributes, its send path with backpressure, its rate limit. */
export class Connection {
  readonly id = randomUUID()
  readonly connectedAt = new Date()
  /** Cleared on each ping, set by the pong; a socket still false at the next ping is dead. */
  alive = true
  closeCode: number | undefined
  #tokens: number
  #refilledAt = Date.now()
  #strikes = 0
  #strikeWindowStart = Date.now()

  constructor (
    readonly socket: WebSocket,
    readonly attributes: SocketAttributes,
    readonly user: User,
    readonly limits: ConnectionLimits,
    readonly onSlowConsumer: (connection: Connection) => void
  ) {
    this.#tokens = limits.burst
  }

  /** Writes pre-serialized frame bytes; false when the frame was not written. */
  send (frame: Buffer): boolean {
    const socket = this.socket
    if (socket.readyState !== WebSocket.OPEN) return false
    if (socket.bufferedAmount > this.limits.maxBufferedBytes) {
      this.onSlowConsumer(this)
      this.close(CloseCode.slowConsumer, 'slow consumer')
      return false
    }
    socket.send(frame, { binary: false })
    return true
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
