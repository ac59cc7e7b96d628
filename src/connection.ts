import { randomUUID } from 'node:crypto'
import { Socket } from 'node:net'
import WebSocket from 'ws'
import { truncateUtf8 } from './json.js'
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
/** RFC 6455: a close frame's payload is at most 125 bytes, 2 of them the code. */
const MAX_CLOSE_REASON_BYTES = 123
const TEXT = { binary: false } as const

/** What the fast send path reads of a `ws` WebSocket (ws 8): its TCP socket and its sender's state. */
interface WsInternals {
  _socket: Socket
  _sender: { _state: unknown }
}
/** ws's Sender is idle (not compressing, not reading a Blob): nothing is queued ahead of a direct write. */
const SENDER_IDLE = 0

/**
 * Frames written directly in one turn of the event loop: while a socket gets one frame a turn, each
 * leaves at once (a lone event has no delay); once it got several in a turn, it is under a burst and its
 * frames are corked until the turn's I/O has been handled, so they leave in one writev per socket and
 * turn instead of one syscall each. A turn with a single frame for it ends the burst.
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
  /** Cleared on each ping, set by the pong; a socket still false at the next ping is dead. */
  alive = true
  closeCode: number | undefined
  /** Made on the first frame the client sends: most sockets only listen. */
  #allowance: FrameAllowance | undefined
  /** Frames may be written to the TCP socket under ws (ws 8 internals as expected, no extension negotiated). */
  readonly #direct: boolean
  /** The turn (see `endTurn`) of this socket's last direct write, and how many frames it wrote in it. */
  #turn = -1
  #framesThisTurn = 0
  /** Its last turn had several frames: cork from the first one. */
  #burst = false
  #corked = false
  /** Bytes written while corked this turn: queued by us, not a backlog the peer failed to read. */
  #corkedBytes = 0
  /** Frames not written because the socket was already closing (reported in its close log line). */
  droppedWhileClosing = 0
  /** When its token expires (ms since epoch): the socket is closed with 4401 then. */
  expiresAt = Infinity
  /** Its presence hello (set once `connected` is sent), so its goodbye never overtakes it. */
  announced: Promise<void> | undefined

  constructor (
    readonly socket: WebSocket,
    readonly attributes: SocketAttributes,
    readonly user: User,
    readonly limits: ConnectionLimits,
    readonly hooks: ConnectionHooks
  ) {
    const internals = socket as unknown as Partial<WsInternals>
    this.#direct = internals._socket instanceof Socket && typeof internals._sender?._state === 'number' && socket.extensions === ''
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
    const internals = socket as unknown as WsInternals
    if (wire === undefined || !this.#direct || internals._sender._state !== SENDER_IDLE) {
      socket.send(payload, TEXT)
      return true
    }
    const stream = internals._socket
    if (!turnScheduled) {
      turnScheduled = true
      setImmediate(endTurn)
    }
    if (this.#turn === turn) {
      this.#framesThisTurn += 1
    } else {
      this.#turn = turn
      this.#framesThisTurn = 1
    }
    if (this.#framesThisTurn > 1 || this.#burst) {
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
    this.#burst = this.#framesThisTurn > 1
    this.#corked = false
    this.#corkedBytes = 0
    if (this.#direct) (this.socket as unknown as WsInternals)._socket.uncork()
  }

  sendFrame (frame: ServerFrame): boolean {
    return this.send(Buffer.from(JSON.stringify(frame)))
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
