import { randomBytes } from 'node:crypto'
import { connect, type Socket } from 'node:net'

/**
 * The load driver's WebSocket client: RFC 6455 over a plain TCP socket, the same code for every system
 * under test (Engine.IO v4 / Socket.IO v5 is a thin layer on top), so each pays the same client cost.
 * Frames are walked in place: a counting client never copies or parses a payload, it only compares the
 * event name at a fixed offset. Server frames are unmasked and unfragmented (ws never fragments a send).
 */

export type WireProtocol = 'relay' | 'ws' | 'socketio'

export interface ClientHandlers {
  /** The client is subscribed: relay `connected`, raw ws upgrade, Socket.IO connect ack. */
  ready: () => void
  /** A `message_added` arrived; `frame[start, end)` is its payload (only read it on sampling clients). */
  delivery: (frame: Buffer, start: number, end: number) => void
  /** The connection failed or closed (code from a close frame, or 1006 without one). */
  closed: (code: number, reason: string) => void
}

const EVENT = Buffer.from('message_added')
/** Where the event name sits in the payload: `{"type":"message_added"` and `42["message_added"`. */
const EVENT_OFFSET: Record<WireProtocol, number> = { relay: 9, ws: 9, socketio: 4 }
const RELAY_CONNECTED = Buffer.from('{"type":"connected"')
const HEADER_END = Buffer.from('\r\n\r\n')

const OPCODE_TEXT = 0x1
const OPCODE_CLOSE = 0x8
const OPCODE_PING = 0x9

/** Total size (header and payload) of the frame at `offset`, or -1 while its header is incomplete. */
function frameSize (bytes: Buffer, offset: number, end: number): number {
  if (end - offset < 2) return -1
  const length7 = (bytes[offset + 1] as number) & 0x7f
  if (length7 < 126) return 2 + length7
  if (length7 === 126) return end - offset < 4 ? -1 : 4 + bytes.readUInt16BE(offset + 2)
  return end - offset < 10 ? -1 : 10 + bytes.readUIntBE(offset + 4, 6)
}

function headerSize (bytes: Buffer, offset: number): number {
  const length7 = (bytes[offset + 1] as number) & 0x7f
  return length7 < 126 ? 2 : length7 === 126 ? 4 : 10
}

/** A masked client frame (clients must mask); only small control and protocol frames are sent. */
function clientFrame (opcode: number, payload: Buffer): Buffer {
  if (payload.length > 125) throw new RangeError('client frames here are small')
  const frame = Buffer.allocUnsafe(6 + payload.length)
  frame[0] = 0x80 | opcode
  frame[1] = 0x80 | payload.length
  randomBytes(4).copy(frame, 2)
  for (let index = 0; index < payload.length; index++) {
    frame[6 + index] = (payload[index] as number) ^ (frame[2 + (index & 3)] as number)
  }
  return frame
}

export class BenchClient {
  readonly #socket: Socket
  readonly #protocol: WireProtocol
  readonly #handlers: ClientHandlers
  readonly #eventOffset: number
  #upgraded = false
  #ready = false
  #done = false
  /** Bytes of a frame (or of the HTTP answer) that the last chunk cut. */
  #pending: Buffer | undefined

  /** `localAddress`: the source address (127.0.0.x), so that many clients do not share one address's ports. */
  constructor ({ port, localAddress }: { port: number, localAddress?: string | undefined }, path: string, protocol: WireProtocol, handlers: ClientHandlers) {
    this.#protocol = protocol
    this.#handlers = handlers
    this.#eventOffset = EVENT_OFFSET[protocol]
    const socket = connect({ host: '127.0.0.1', port, noDelay: true, ...(localAddress === undefined ? {} : { localAddress }) })
    this.#socket = socket
    socket.once('connect', () => {
      const key = randomBytes(16).toString('base64')
      socket.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`)
    })
    socket.on('data', (chunk: Buffer) => this.#onData(chunk))
    socket.once('error', (error) => this.#close(1006, error.message))
    socket.once('close', () => this.#close(1006, 'connection closed'))
  }

  get ready (): boolean {
    return this.#ready
  }

  destroy (): void {
    this.#done = true
    this.#socket.destroy()
  }

  #close (code: number, reason: string): void {
    if (this.#done) return
    this.#done = true
    this.#socket.destroy()
    this.#handlers.closed(code, reason)
  }

  #onData (chunk: Buffer): void {
    let offset = 0
    if (!this.#upgraded) {
      const answer = this.#pending === undefined ? chunk : Buffer.concat([this.#pending, chunk])
      const end = answer.indexOf(HEADER_END)
      if (end < 0) {
        this.#pending = answer
        return
      }
      this.#pending = undefined
      const status = answer.toString('latin1', 0, answer.indexOf('\r\n'))
      if (!status.startsWith('HTTP/1.1 101')) return this.#close(1002, `upgrade refused: ${status}`)
      this.#upgraded = true
      if (this.#protocol === 'ws') this.#becomeReady()
      chunk = answer
      offset = end + HEADER_END.length
    }
    if (this.#pending !== undefined) offset = this.#completePending(chunk, offset)
    const end = chunk.length
    while (offset < end && !this.#done) {
      const size = frameSize(chunk, offset, end)
      if (size < 0 || offset + size > end) {
        this.#pending = Buffer.from(chunk.subarray(offset))
        return
      }
      this.#onFrame(chunk, offset, offset + size)
      offset += size
    }
  }

  /** Finishes the frame the previous chunk cut, copying only that frame; returns where the rest starts. */
  #completePending (chunk: Buffer, offset: number): number {
    const pending = this.#pending as Buffer
    let size = frameSize(pending, 0, pending.length)
    if (size < 0) {
      const head = Buffer.concat([pending, chunk.subarray(offset, offset + 10)])
      size = frameSize(head, 0, head.length)
      if (size < 0) {
        this.#pending = head
        return chunk.length
      }
    }
    const missing = size - pending.length
    if (chunk.length - offset < missing) {
      this.#pending = Buffer.concat([pending, chunk.subarray(offset)])
      return chunk.length
    }
    this.#pending = undefined
    const frame = Buffer.concat([pending, chunk.subarray(offset, offset + missing)])
    this.#onFrame(frame, 0, size)
    return offset + missing
  }

  #onFrame (bytes: Buffer, start: number, end: number): void {
    const opcode = (bytes[start] as number) & 0x0f
    const payload = start + headerSize(bytes, start)
    if (opcode === OPCODE_TEXT) {
      this.#onText(bytes, payload, end)
    } else if (opcode === OPCODE_PING) {
      this.#socket.write(clientFrame(0xa, bytes.subarray(payload, end)))
    } else if (opcode === OPCODE_CLOSE) {
      const code = end - payload >= 2 ? bytes.readUInt16BE(payload) : 1005
      this.#close(code, bytes.toString('utf8', payload + 2, end))
    }
  }

  #onText (bytes: Buffer, start: number, end: number): void {
    const at = start + this.#eventOffset
    if (this.#ready && end - at > EVENT.length && bytes.compare(EVENT, 0, EVENT.length, at, at + EVENT.length) === 0) {
      this.#handlers.delivery(bytes, start, end)
      return
    }
    if (this.#protocol === 'socketio') return this.#onEngineIo(bytes, start, end)
    if (this.#protocol === 'relay' && !this.#ready && end - start >= RELAY_CONNECTED.length &&
      bytes.compare(RELAY_CONNECTED, 0, RELAY_CONNECTED.length, start, start + RELAY_CONNECTED.length) === 0) {
      this.#becomeReady()
    }
  }

  /** Engine.IO v4 packets: 0 open, 2 ping, 4 message (Socket.IO 40 connect ack, 44 connect error). */
  #onEngineIo (bytes: Buffer, start: number, end: number): void {
    const type = bytes[start]
    if (type === 0x32 /* 2 ping */) {
      this.#socket.write(clientFrame(OPCODE_TEXT, Buffer.from('3')))
    } else if (type === 0x30 /* 0 open */) {
      this.#socket.write(clientFrame(OPCODE_TEXT, Buffer.from('40')))
    } else if (type === 0x34 /* 4 message */ && bytes[start + 1] === 0x30 /* 0 connect */) {
      this.#becomeReady()
    } else if (type === 0x34 && bytes[start + 1] === 0x34 /* 4 connect error */) {
      this.#close(4000, bytes.toString('utf8', start, end))
    }
  }

  #becomeReady (): void {
    if (this.#ready) return
    this.#ready = true
    this.#handlers.ready()
  }
}
