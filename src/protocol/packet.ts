import type { Audience, Delivery } from './routing.js'

/**
 * What crosses the bus: one line of routing header (the audience), then the WebSocket frame exactly as
 * it is written to sockets (RFC 6455 text frame: header and JSON payload). The node that accepts an
 * event serializes and frames it once; receivers only slice, and every socket gets the same bytes.
 */
const NEWLINE = 0x0a
/** FIN + text opcode; server frames are never masked. */
const FINAL_TEXT = 0x81

export interface Packet {
  audience: Audience
  /** When the accepting node took the event (ms since epoch), for the fan-out histogram. */
  acceptedAt: number
  /** A durable event's place in its stream (the topic it came on); absent on ephemeral events. */
  epoch?: string
  offset?: number
  /** The stream it came from (the topic), set by the hub. */
  stream?: string
  /** The JSON payload of the frame. */
  frame: Buffer
  /** The whole WebSocket frame (header + payload), ready for the socket. */
  wire: Buffer
}

/** A frame as the hub hands it to sockets: the JSON payload and the same frame ready for the wire. */
export type Outbound = Pick<Packet, 'frame' | 'wire' | 'stream' | 'offset'>

export class PacketError extends Error {
  override name = 'PacketError'
}

function headerLength (payloadLength: number): number {
  return payloadLength < 126 ? 2 : payloadLength < 65536 ? 4 : 10
}

function writeHeader (target: Buffer, offset: number, payloadLength: number): void {
  target[offset] = FINAL_TEXT
  if (payloadLength < 126) {
    target[offset + 1] = payloadLength
  } else if (payloadLength < 65536) {
    target[offset + 1] = 126
    target.writeUInt16BE(payloadLength, offset + 2)
  } else {
    target[offset + 1] = 127
    target.writeUInt32BE(Math.floor(payloadLength / 2 ** 32), offset + 2)
    target.writeUInt32BE(payloadLength >>> 0, offset + 6)
  }
}

export function encodePacket (delivery: Delivery, acceptedAt: number): Buffer {
  return packetOf(JSON.stringify({ t: acceptedAt, a: delivery.audience }), JSON.stringify(delivery.frame))
}

/** The routing header line, then the payload framed as one WebSocket text frame. */
function packetOf (routing: string, payload: string): Buffer {
  const routingBytes = Buffer.byteLength(routing)
  const payloadBytes = Buffer.byteLength(payload)
  const frameStart = routingBytes + 1
  const payloadStart = frameStart + headerLength(payloadBytes)
  const packet = Buffer.allocUnsafe(payloadStart + payloadBytes)
  packet.write(routing, 0, 'utf8')
  packet[routingBytes] = NEWLINE
  writeHeader(packet, frameStart, payloadBytes)
  packet.write(payload, payloadStart, 'utf8')
  return packet
}

/**
 * A durable event before its stream numbered it: the routing header and the frame's JSON, each without
 * its closing brace. The stream's store appends `,"e":…,"o":…}` to the one and `,"stream":…,"offset":…}`
 * to the other and frames the result (`durablePacket` here, the same bytes in Lua on Redis), so the
 * offset sits in the bytes every receiver slices, framed once per event and stream.
 */
export interface DurableParts {
  routingHead: string
  payloadHead: string
}

export function durableParts (delivery: Delivery, acceptedAt: number): DurableParts {
  const routing = JSON.stringify({ t: acceptedAt, a: delivery.audience })
  const payload = JSON.stringify(delivery.frame)
  return { routingHead: routing.slice(0, -1), payloadHead: payload.slice(0, -1) }
}

/** Epochs are made of these characters only, so they need no escaping in JSON or Lua. */
export const EPOCH_PATTERN = /^[0-9a-z]{1,32}$/

/** `streamJson` is the stream's name as a JSON string. See DurableParts. */
export function durablePacket (routingHead: string, payloadHead: string, streamJson: string, epoch: string, offset: number): Buffer {
  return packetOf(`${routingHead},"e":"${epoch}","o":${offset}}`, `${payloadHead},"stream":${streamJson},"offset":${offset}}`)
}

export function decodePacket (bytes: Buffer): Packet {
  const split = bytes.indexOf(NEWLINE)
  if (split < 0) throw new PacketError('packet without routing header')
  let header: { t?: unknown, a?: unknown, e?: unknown, o?: unknown }
  try {
    header = JSON.parse(bytes.toString('utf8', 0, split)) as typeof header
  } catch {
    throw new PacketError('routing header is not JSON')
  }
  const audience = header?.a as Audience | undefined
  if (typeof header?.t !== 'number' || typeof audience !== 'object' || audience === null || typeof audience.scope !== 'string') {
    throw new PacketError('routing header without acceptedAt and audience')
  }
  const wire = bytes.subarray(split + 1)
  if (wire.length < 2 || wire[0] !== FINAL_TEXT) throw new PacketError('packet without a WebSocket text frame')
  const second = wire[1] as number
  if ((second & 0x80) !== 0) throw new PacketError('server frames are never masked')
  const length7 = second & 0x7f
  const payloadStart = length7 < 126 ? 2 : length7 === 126 ? 4 : 10
  if (wire.length < payloadStart) throw new PacketError('frame length bytes missing')
  const payloadLength = length7 < 126
    ? length7
    : length7 === 126 ? wire.readUInt16BE(2) : wire.readUInt32BE(2) * 2 ** 32 + wire.readUInt32BE(6)
  if (wire.length !== payloadStart + payloadLength) throw new PacketError('frame length does not match the packet')
  const packet: Packet = { audience, acceptedAt: header.t, frame: wire.subarray(payloadStart), wire }
  if (header.o !== undefined) {
    if (typeof header.e !== 'string' || typeof header.o !== 'number' || !Number.isSafeInteger(header.o) || header.o < 1) {
      throw new PacketError('durable packet without epoch and offset')
    }
    packet.epoch = header.e
    packet.offset = header.o
  }
  return packet
}
