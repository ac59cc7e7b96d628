import { randomUUID } from 'node:crypto'
import WebSocket from 'ws'
import { truncateUtf8 } from '../protocol/json.js'
import type { ServerFrame, User } from '../protocol/protocol.js'
import type { SocketAttributes } from '../protocol/routing.js'
import type { StreamPosition } from '../stores/bus.js'
import type { FrameHold, SendState, Writer } from './writer.js'

/** A client's `since` (its position per stream) or `history` (last N events), as parsed on upgrade. */
export interface RecoveryRequest {
  since?: Record<string, StreamPosition>
  history?: number
  /** What was wrong with the request (sent as an `error` frame after `connected`). */
  invalid?: string
}

export interface ConnectionLimits {
  maxBufferedBytes: number
  ratePerSecond: number
  burst: number
  abuseStrikes: number
}

const STRIKE_WINDOW_MS = 10_000
const CLOSE_GRACE_MS = 1_000
/** RFC 6455: a close frame's payload is at most 125 bytes, 2 of them the code. */
const MAX_CLOSE_REASON_BYTES = 123

/** One authenticated socket: its identity and routing attributes, its rate limit, its close. Writer sends. */
export class Connection {
  readonly id = randomUUID()
  /** Cleared on each ping, set by the pong; a socket still false at the next ping is dead. */
  alive = true
  closeCode: number | undefined
  /** Made on the first frame the client sends: most sockets only listen. */
  #allowance: FrameAllowance | undefined
  /** Owned by the Writer: made on the first frame sent to the socket. */
  sendState: SendState | undefined
  /** Frames not written because the socket was already closing (reported in its close log line). */
  droppedWhileClosing = 0
  /** When its token expires (ms since epoch): the socket is closed with 4401 then. */
  expiresAt = Infinity
  /** Set while frames for it are kept instead of written (see FrameHold). */
  hold: FrameHold | undefined
  /** What the client asked to be sent on connect (`since`, `history`), until it is. */
  recovery: RecoveryRequest | undefined
  /** Its presence hello (set once `connected` is sent), so its goodbye never overtakes it. */
  announced: Promise<void> | undefined

  constructor (
    readonly socket: WebSocket,
    readonly attributes: SocketAttributes,
    readonly user: User,
    readonly limits: ConnectionLimits,
    readonly writer: Writer
  ) {}

  /** See Writer.send: `wire` is the same frame pre-framed for WebSocket, shared by every receiver. */
  send (payload: Buffer, wire?: Buffer): boolean {
    return this.writer.send(this, payload, wire)
  }

  sendFrame (frame: ServerFrame): boolean {
    return this.writer.sendFrame(this, frame)
  }

  /** Closes with a code, and cuts the socket if the peer does not complete the close handshake. */
  close (code: number, reason: string): void {
    if (this.closeCode !== undefined) return
    this.closeCode = code
    closeSocket(this.socket, code, reason)
  }

  /** Token bucket: true when a client event may proceed now. */
  takeToken (now = Date.now()): boolean {
    const allowance = this.#allowance ??= new FrameAllowance(this.limits.burst, now)
    const elapsed = (now - allowance.refilledAt) / 1000
    allowance.refilledAt = now
    allowance.tokens = Math.min(this.limits.burst, allowance.tokens + elapsed * this.limits.ratePerSecond)
    if (allowance.tokens < 1) return false
    allowance.tokens -= 1
    return true
  }

  /** Counts a rejected or invalid frame; true when the socket has abused its allowance. */
  strike (now = Date.now()): boolean {
    const allowance = this.#allowance ??= new FrameAllowance(this.limits.burst, now)
    if (now - allowance.strikeWindowStart > STRIKE_WINDOW_MS) {
      allowance.strikeWindowStart = now
      allowance.strikes = 0
    }
    allowance.strikes += 1
    return allowance.strikes >= this.limits.abuseStrikes
  }
}

/**
 * Closes a socket with a code and a reason (cut to the 123 bytes a close frame carries), and terminates
 * it if the peer has not completed the handshake within a grace: a silent peer never holds a descriptor.
 */
export function closeSocket (socket: WebSocket, code: number, reason: string, graceMs = CLOSE_GRACE_MS): void {
  if (socket.readyState === WebSocket.CLOSED) return
  socket.close(code, truncateUtf8(reason, MAX_CLOSE_REASON_BYTES))
  const timer = setTimeout(() => socket.terminate(), graceMs)
  timer.unref()
  socket.once('close', () => clearTimeout(timer))
}

/** A client's token bucket (full when made) and its strikes within the current window. */
class FrameAllowance {
  strikes = 0
  constructor (public tokens: number, public refilledAt: number, public strikeWindowStart = refilledAt) {}
}
