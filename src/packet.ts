import type { Audience, Delivery } from './routing.js'

/**
 * What crosses the bus: one line of routing header (the audience) and then the frame exactly as it is
 * written to sockets. The node that accepts an event serializes the frame once; receivers only slice.
 */
const NEWLINE = 0x0a

export interface Packet {
  audience: Audience
  /** When the accepting node took the event (ms since epoch), for the fan-out histogram. */
  acceptedAt: number
  /** The frame bytes, ready for the socket. */
  frame: Buffer
}

export function encodePacket (delivery: Delivery, acceptedAt: number): Buffer {
  const header = JSON.stringify({ t: acceptedAt, a: delivery.audience })
  return Buffer.from(`${header}\n${JSON.stringify(delivery.frame)}`)
}

export class PacketError extends Error {
  override name = 'PacketError'
}

export function decodePacket (bytes: Buffer): Packet {
  const split = bytes.indexOf(NEWLINE)
  if (split < 0) throw new PacketError('packet without routing header')
  const header = JSON.parse(bytes.toString('utf8', 0, split)) as { t: number, a: Audience }
  return { audience: header.a, acceptedAt: header.t, frame: bytes.subarray(split + 1) }
}
