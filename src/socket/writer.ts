import { createRequire } from 'node:module'
import { Socket } from 'node:net'
import WebSocket from 'ws'
import type { Connection } from './connection.js'
import type { Outbound } from '../protocol/packet.js'
import { admits, type Audience } from '../protocol/routing.js'
import type { Sockets } from './socket-index.js'
import { CloseCode, type ServerFrame } from '../protocol/protocol.js'

/**
 * The send path, whole: fan-out over prepared candidates, the pre-framed fast path under `ws`, burst
 * corking, and the slow-consumer cut. One writer per hub (per app), so two apps in a process share nothing.
 */

/**
 * The `ws` release whose private fields the fast path reads (package.json pins it, with an override for
 * @fastify/websocket). Any other version is written through `ws.send`: correct, just not pre-framed.
 */
export const FAST_PATH_WS_VERSION = '8.23.0'

export function installedWsVersion (): string {
  const manifest = createRequire(import.meta.url)('ws/package.json') as { version?: unknown }
  return typeof manifest.version === 'string' ? manifest.version : 'unknown'
}

/** What the fast path reads of a `ws` WebSocket (ws 8): its TCP socket and its sender's state. */
interface WsInternals {
  _socket: Socket
  _sender: { _state: unknown }
}
/** ws's Sender is idle (not compressing, not reading a Blob): nothing is queued ahead of a direct write. */
const SENDER_IDLE = 0
const TEXT = { binary: false } as const

export type DropReason = 'closing' | 'slow_consumer' | 'stream_broken'

/**
 * Frames kept for a socket instead of written: while it is told `connected` and replayed what it missed
 * (sent after, in order), or, `discard`, once a stream it reads broke and it is about to be closed.
 */
export class FrameHold {
  readonly frames: Outbound[] = []
  bytes = 0
  constructor (readonly limit: number, readonly discard = false) {}
}

export interface WriterHooks {
  /** A frame was not written: the socket is closing, or it overflowed (and is now closing with 1013). */
  dropped: (connection: Connection, reason: DropReason) => void
}

/** A socket's send state on the fast path, made on its first bus frame (an idle socket holds none). */
export class SendState {
  /** The writer's turn of this socket's last direct write, and how many frames it wrote in it. */
  turn = -1
  framesThisTurn = 0
  /** Its last turn had several frames: cork from the first one. */
  burst = false
  corked = false
  /** Bytes written while corked this turn: queued by us, not a backlog the peer failed to read. */
  corkedBytes = 0
  /** `direct`: frames may go to the TCP socket under ws (internals as expected, no extension). */
  constructor (readonly direct: boolean) {}
}

/**
 * Frames written directly in one turn of the event loop: while a socket gets one frame a turn, each
 * leaves at once (a lone event has no delay); once it got several in a turn, it is under a burst and its
 * frames are corked until the turn's I/O has been handled, so they leave in one writev per socket and
 * turn instead of one syscall each. A turn with a single frame for it ends the burst.
 */
export class Writer {
  #turn = 0
  #turnScheduled = false
  readonly #corked: Connection[] = []
  readonly #endTurn = (): void => {
    this.#turnScheduled = false
    this.#turn += 1
    const corked = this.#corked
    for (let index = 0; index < corked.length; index++) this.#uncork(corked[index] as Connection)
    corked.length = 0
  }

  /** `fastPath`: false when the installed ws is not the one whose internals this file reads. */
  constructor (readonly hooks: WriterHooks, readonly fastPath = installedWsVersion() === FAST_PATH_WS_VERSION) {}

  /** Writes one bus frame to every candidate the audience admits; returns how many got it. */
  fanOut (candidates: Sockets | undefined, audience: Audience, outbound: Outbound): number {
    if (candidates === undefined) return 0
    const { frame, wire } = outbound
    if (!(candidates instanceof Set)) {
      if (!admits(audience, candidates.attributes)) return 0
      if (candidates.hold !== undefined) return this.#hold(candidates, outbound)
      return this.send(candidates, frame, wire) ? 1 : 0
    }
    let sent = 0
    for (const connection of candidates) {
      if (!admits(audience, connection.attributes)) continue
      if (connection.hold !== undefined) sent += this.#hold(connection, outbound)
      else if (this.send(connection, frame, wire)) sent += 1
    }
    return sent
  }

  /** Keeps a frame for a socket on hold (see FrameHold); one that holds too much is a slow consumer. */
  #hold (connection: Connection, outbound: Outbound): number {
    const hold = connection.hold as FrameHold
    if (hold.discard) {
      this.hooks.dropped(connection, 'stream_broken')
      return 0
    }
    hold.frames.push(outbound)
    hold.bytes += outbound.wire.length
    if (hold.bytes > hold.limit) {
      connection.hold = new FrameHold(0, true)
      connection.close(CloseCode.slowConsumer, 'slow consumer')
      this.hooks.dropped(connection, 'slow_consumer')
    }
    return 1
  }

  sendFrame (connection: Connection, frame: ServerFrame): boolean {
    return this.send(connection, Buffer.from(JSON.stringify(frame)))
  }

  /**
   * Writes a serialized frame; false when it was not written. `wire`, when given, is the same frame
   * already framed for WebSocket (see packet.ts): it goes to the TCP socket as is, the bytes shared by
   * every receiver. ws is bypassed only while its sender is idle, so nothing it queued is overtaken.
   */
  send (connection: Connection, payload: Buffer, wire?: Buffer, paced = false): boolean {
    const socket = connection.socket
    if (socket.readyState !== WebSocket.OPEN) {
      // Before the upgrade completes nothing is sent here; after it, the socket is closing.
      if (socket.readyState !== WebSocket.CONNECTING) {
        connection.droppedWhileClosing += 1
        this.hooks.dropped(connection, 'closing')
      }
      return false
    }
    // `paced`: a replay, whose writer waits for the buffer to drain between writes (see Recovery).
    if (!paced && socket.bufferedAmount - (connection.sendState?.corkedBytes ?? 0) > connection.limits.maxBufferedBytes) {
      connection.close(CloseCode.slowConsumer, 'slow consumer')
      this.hooks.dropped(connection, 'slow_consumer')
      return false
    }
    if (wire === undefined) {
      socket.send(payload, TEXT)
      return true
    }
    // Made on the first bus frame: a socket that only ever got `connected` holds none.
    const state = connection.sendState ??= new SendState(this.#direct(socket))
    const internals = socket as unknown as WsInternals
    if (!state.direct || internals._sender._state !== SENDER_IDLE) {
      socket.send(payload, TEXT)
      return true
    }
    if (!this.#turnScheduled) {
      this.#turnScheduled = true
      setImmediate(this.#endTurn)
    }
    if (state.turn === this.#turn) {
      state.framesThisTurn += 1
    } else {
      state.turn = this.#turn
      state.framesThisTurn = 1
    }
    const stream = internals._socket
    if (state.framesThisTurn > 1 || state.burst) {
      if (!state.corked) {
        state.corked = true
        stream.cork()
        this.#corked.push(connection)
      }
      state.corkedBytes += wire.length
    }
    stream.write(wire)
    return true
  }

  #direct (socket: WebSocket): boolean {
    const internals = socket as unknown as Partial<WsInternals>
    return this.fastPath && internals._socket instanceof Socket && typeof internals._sender?._state === 'number' && socket.extensions === ''
  }

  /** Lets this turn's frames of a socket go (see the class comment). */
  #uncork (connection: Connection): void {
    const state = connection.sendState
    if (state === undefined) return
    state.burst = state.framesThisTurn > 1
    state.corked = false
    state.corkedBytes = 0
    if (state.direct) (connection.socket as unknown as WsInternals)._socket.uncork()
  }
}
