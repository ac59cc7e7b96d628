import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import t from 'tap'
import { decodePacket, encodePacket, PacketError } from '../src/protocol/packet.js'
import type { Audience, Delivery } from '../src/protocol/routing.js'

/**
 * The reference framer: ws's own `Sender.frame`, i.e. the bytes ws writes for `socket.send(payload)` on a
 * server socket without extensions. ws's package `exports` hide `ws/lib/sender.js`, so it is loaded by its
 * file path next to the package's (exported) package.json.
 */
interface FrameOptions { fin: boolean, opcode: number, mask: boolean, readOnly: boolean, rsv1: boolean }
interface SenderClass { frame: (data: Buffer, options: FrameOptions) => Buffer[] }
const require = createRequire(import.meta.url)
const Sender = require(join(dirname(require.resolve('ws/package.json')), 'lib', 'sender.js')) as SenderClass

function wsFrame (payload: Buffer): Buffer {
  // Sender.frame returns the header and the payload buffer itself: copy so nothing aliases the input.
  return Buffer.concat(Sender.frame(Buffer.from(payload), { fin: true, opcode: 1, mask: false, readOnly: false, rsv1: false }))
}

/** A routing line as encodePacket writes it, for hand-built packets. */
function routingLine (audience: Audience, acceptedAt: number): Buffer {
  return Buffer.from(`${JSON.stringify({ t: acceptedAt, a: audience })}\n`)
}

const EMPTY_GLOBAL = JSON.stringify({ type: 'global_updated', data: { s: '' } })

/** A delivery whose JSON payload is exactly `bytes` long (bytes >= the empty frame's length). */
function deliveryOfBytes (bytes: number, audience: Audience, fill = 'x'): Delivery {
  const base = Buffer.byteLength(EMPTY_GLOBAL)
  const fillBytes = Buffer.byteLength(fill)
  const room = bytes - base
  if (room < 0 || room % fillBytes !== 0) throw new Error(`cannot build a payload of ${bytes} bytes from ${JSON.stringify(fill)}`)
  const delivery: Delivery = { audience, frame: { type: 'global_updated', data: { s: fill.repeat(room / fillBytes) } } }
  if (Buffer.byteLength(JSON.stringify(delivery.frame)) !== bytes) throw new Error('payload builder is off')
  return delivery
}

const chatAudience: Audience = { scope: 'chat', chat: 'room-1', role: 'operator', exceptUser: 'user:7' }
const MIN_ENCODABLE = Buffer.byteLength(EMPTY_GLOBAL)
const BOUNDARY_SIZES = [MIN_ENCODABLE, 125, 126, 127, 65535, 65536, 70000]

t.test('the reference framer is ws itself, and its three length forms are what this file expects', async (t) => {
  t.equal(wsFrame(Buffer.alloc(125)).length, 2 + 125, '7-bit form')
  t.equal(wsFrame(Buffer.alloc(126)).length, 4 + 126, '16-bit form')
  t.equal(wsFrame(Buffer.alloc(65535)).length, 4 + 65535, '16-bit form, largest')
  t.equal(wsFrame(Buffer.alloc(65536)).length, 10 + 65536, '64-bit form')
  t.equal(wsFrame(Buffer.alloc(0))[0], 0x81, 'FIN + text')
})

t.test('a multi-byte UTF-8 payload is framed by its bytes, not its characters', async (t) => {
  // 100 characters, 400 bytes: a string-length frame would pick the 7-bit form.
  const emoji = Buffer.from('😀'.repeat(50) + 'é€'.repeat(25))
  t.equal('😀'.repeat(50).length + 'é€'.repeat(25).length, 150, 'string length')
  t.equal(emoji.length, 50 * 4 + 25 * 5, 'byte length')
  const decoded = decodePacket(Buffer.concat([routingLine({ scope: 'broadcast' }, 1), wsFrame(emoji)]))
  t.equal(decoded.frame.toString('utf8'), emoji.toString('utf8'))
})

t.test('decodePacket reads ws-framed packets of every 7-bit length and the 16/64-bit boundaries', async (t) => {
  const sizes = [...Array.from({ length: 126 }, (_, index) => index), 126, 65535, 65536]
  const wrong: string[] = []
  const audience: Audience = { scope: 'operator', operatorId: '42' }
  for (const size of sizes) {
    const payload = Buffer.alloc(size, 0x7a)
    const frame = wsFrame(payload)
    const packet = decodePacket(Buffer.concat([routingLine(audience, 1000 + size), frame]))
    if (!packet.wire.equals(frame)) wrong.push(`${size}: wire`)
    if (!packet.frame.equals(payload)) wrong.push(`${size}: frame`)
    if (packet.acceptedAt !== 1000 + size) wrong.push(`${size}: acceptedAt`)
    if (JSON.stringify(packet.audience) !== JSON.stringify(audience)) wrong.push(`${size}: audience`)
  }
  t.same(wrong, [], 'every size decodes to ws\'s frame and the payload')
})

t.test('encodePacket → decodePacket round trip matches ws byte for byte', async (t) => {
  const sizes = [...Array.from({ length: 126 - MIN_ENCODABLE }, (_, index) => MIN_ENCODABLE + index), ...BOUNDARY_SIZES]
  const wrong: string[] = []
  for (const size of sizes) {
    const delivery = deliveryOfBytes(size, chatAudience)
    const payload = Buffer.from(JSON.stringify(delivery.frame))
    const packet = decodePacket(encodePacket(delivery, 1_700_000_000_000 + size))
    if (packet.frame.length !== size || !packet.frame.equals(payload)) wrong.push(`${size}: frame`)
    if (!packet.wire.equals(wsFrame(payload))) wrong.push(`${size}: wire`)
    if (packet.acceptedAt !== 1_700_000_000_000 + size) wrong.push(`${size}: acceptedAt`)
  }
  t.same(wrong, [], `${sizes.length} sizes from ${MIN_ENCODABLE} to 70000`)

  for (const size of [125, 126, 65535, 65536]) {
    const delivery = deliveryOfBytes(size, chatAudience)
    const payload = Buffer.from(JSON.stringify(delivery.frame))
    const encoded = encodePacket(delivery, 5)
    const packet = decodePacket(encoded)
    t.same(packet.audience, chatAudience, `${size}: audience`)
    t.equal(packet.acceptedAt, 5, `${size}: acceptedAt`)
    t.ok(packet.frame.equals(payload), `${size}: frame is the JSON payload`)
    t.ok(packet.wire.equals(wsFrame(payload)), `${size}: wire is ws's frame`)
    t.ok(packet.wire.equals(wsFrame(payload)), `${size}: wire is ws's frame`)
    t.equal(encoded.length, routingLine(chatAudience, 5).length + wsFrame(payload).length, `${size}: nothing else in the packet`)
    t.same(JSON.parse(packet.frame.toString('utf8')), delivery.frame, `${size}: payload parses back`)
  }
})

t.test('multi-byte UTF-8 payloads and audiences: lengths are byte lengths', async (t) => {
  // Each case: characters that make the byte length cross a length-form boundary the string length does not.
  const audience: Audience = { scope: 'chat', chat: 'чат-€-😀\nline', exceptUser: 'user:Ωmega' }
  const cases: Array<{ fill: string, bytes: number }> = [
    { fill: 'é', bytes: MIN_ENCODABLE + 2 * 40 }, // ≤ 125 bytes
    { fill: '€', bytes: MIN_ENCODABLE + 3 * 30 }, // 131 bytes from 71 characters: 16-bit form
    { fill: '😀', bytes: MIN_ENCODABLE + 4 * 16374 }, // 65537 bytes from 32789 characters: 64-bit form
    { fill: '😀', bytes: MIN_ENCODABLE + 4 * 16373 } // 65533 bytes: 16-bit form
  ]
  for (const { fill, bytes } of cases) {
    const delivery = deliveryOfBytes(bytes, audience, fill)
    const json = JSON.stringify(delivery.frame)
    t.not(json.length, bytes, `${fill} x${bytes}: string length differs from byte length`)
    const payload = Buffer.from(json)
    t.equal(payload.length, bytes)
    const packet = decodePacket(encodePacket(delivery, 9))
    t.equal(packet.frame.length, bytes, `${bytes} bytes: frame length`)
    t.ok(packet.frame.equals(payload), `${bytes} bytes: frame is the payload`)
    t.ok(packet.wire.equals(wsFrame(payload)), `${bytes} bytes: wire is ws's frame`)
    t.same(packet.audience, audience, `${bytes} bytes: audience with non-ASCII and an escaped newline`)
    t.equal(packet.frame.toString('utf8'), json, `${bytes} bytes: text survives`)
  }
})

t.test('malformed packets throw PacketError', async (t) => {
  const delivery = deliveryOfBytes(200, chatAudience)
  const good = encodePacket(delivery, 1)
  const split = good.indexOf(0x0a)
  const header = good.subarray(0, split + 1)
  const wire = good.subarray(split + 1)
  t.ok(decodePacket(good), 'the unaltered packet decodes')

  const rejects = (bytes: Buffer, what: string): void => {
    t.throws(() => decodePacket(bytes), PacketError, what)
  }
  rejects(good.subarray(0, split), 'no newline (routing header only)')
  rejects(Buffer.from(JSON.stringify({ t: 1, a: chatAudience })), 'no newline at all')
  rejects(header, 'newline and nothing after it')
  rejects(Buffer.concat([header, Buffer.from([0x81])]), 'one byte of frame')
  rejects(good.subarray(0, good.length - 1), 'truncated payload (16-bit form)')
  rejects(good.subarray(0, split + 1 + 4 + 100), 'payload cut in half')
  rejects(Buffer.concat([good, Buffer.from('x')]), 'trailing byte after the frame')

  const small = encodePacket(deliveryOfBytes(60, chatAudience), 1)
  rejects(small.subarray(0, small.length - 1), 'truncated payload (7-bit form)')
  const big = encodePacket(deliveryOfBytes(65536, chatAudience), 1)
  rejects(big.subarray(0, big.length - 1), 'truncated payload (64-bit form)')

  const withLength = (patch: (frame: Buffer) => void): Buffer => {
    const copy = Buffer.from(wire)
    patch(copy)
    return Buffer.concat([header, copy])
  }
  rejects(withLength((frame) => frame.writeUInt16BE(199, 2)), '16-bit length one short')
  rejects(withLength((frame) => frame.writeUInt16BE(201, 2)), '16-bit length one long')
  rejects(Buffer.concat([header, Buffer.from([0x81, 5]), Buffer.from('abcd')]), '7-bit length longer than the payload')
  rejects(Buffer.concat([header, Buffer.from([0x81, 3]), Buffer.from('abcd')]), '7-bit length shorter than the payload')

  for (const [opcode, name] of [[0x82, 'binary'], [0x01, 'text without FIN'], [0x80, 'continuation'], [0x88, 'close'], [0x89, 'ping'], [0xc1, 'compressed text (RSV1)']] as const) {
    rejects(withLength((frame) => { frame[0] = opcode }), `opcode byte 0x${opcode.toString(16)} (${name})`)
  }
})

/*
 * Malformed packets a careless decoder would let through or mislabel: a packet with the MASK bit would be
 * forwarded to sockets as is (clients fail the connection on a masked server frame), and one without an
 * audience would make Hub.deliver throw outside Hub.receive's try.
 */

t.test('an extended length marker without its length bytes is a PacketError', async (t) => {
  const header = routingLine(chatAudience, 1)
  t.throws(() => decodePacket(Buffer.concat([header, Buffer.from([0x81, 126])])), PacketError, '16-bit marker without its length bytes')
  t.throws(() => decodePacket(Buffer.concat([header, Buffer.from([0x81, 126, 0])])), PacketError, '16-bit marker with one length byte')
  t.throws(() => decodePacket(Buffer.concat([header, Buffer.from([0x81, 127, 0, 0, 0, 0])])), PacketError, '64-bit marker with half its length bytes')
})

t.test('a frame with the MASK bit set is a PacketError', async (t) => {
  // Lengths otherwise consistent: [0x81, 0x84] + 4 payload bytes.
  t.throws(() => decodePacket(Buffer.concat([routingLine(chatAudience, 1), Buffer.from([0x81, 0x80 | 4]), Buffer.from('abcd')])), PacketError, 'MASK bit set')
})

t.test('a routing line that is not a routing header is a PacketError', async (t) => {
  const frame = wsFrame(Buffer.from('{}'))
  t.throws(() => decodePacket(Buffer.concat([Buffer.from('not json\n'), frame])), PacketError, 'not JSON')
  t.throws(() => decodePacket(Buffer.concat([Buffer.from('{"t":1}\n'), frame])), PacketError, 'JSON without an audience')
})
