import type { AddressInfo, Socket } from 'node:net'
import { setImmediate as nextTurn } from 'node:timers/promises'
import t, { type Test } from 'tap'
import WebSocket, { WebSocketServer } from 'ws'
import { Connection, type ConnectionLimits } from '../src/socket/connection.js'
import { decodePacket, encodePacket } from '../src/protocol/packet.js'
import type { ServerFrame } from '../src/protocol/protocol.js'
import type { SocketAttributes } from '../src/protocol/routing.js'
import { FAST_PATH_WS_VERSION, installedWsVersion, Writer, type DropReason, type WriterHooks } from '../src/socket/writer.js'

/*
 * Connection.send against real `ws` servers and clients over loopback TCP. Every frame carries a sequence
 * number and padding to a chosen size; clients record what arrives, and each test compares the whole
 * received list with the sent one (content, order, text opcode), so a wrong header, a swapped or lost
 * frame, or a cork that is never released fails it (the waits are bounded).
 */

type Tap = Test
const WAIT_MS = 5000

const attributes: SocketAttributes = { endpoint: 'chat', role: 'user', userId: '1', userKey: 'user:1', chatUuid: 'c1' }
const roomy: ConnectionLimits = { maxBufferedBytes: 64 * 1024 * 1024, ratePerSecond: 10, burst: 10, abuseStrikes: 10 }

/** Sizes across the three length forms (7-bit, 16-bit, 64-bit), payload bytes. */
const SIZES = [60, 125, 126, 127, 1000, 65535, 65536, 100_000, 80, 300_000]

async function within<T> (promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}

/** A global_updated frame of exactly `bytes` JSON bytes (bytes >= 60). */
function frameOf (seq: number, bytes: number): ServerFrame {
  const base = JSON.stringify({ type: 'global_updated', data: { seq, pad: '' } }).length
  if (bytes < base) throw new Error(`frame ${seq} cannot be ${bytes} bytes`)
  const frame: ServerFrame = { type: 'global_updated', data: { seq, pad: 'p'.repeat(bytes - base) } }
  return frame
}

interface Recorded { drops: Array<{ id: string, reason: DropReason }> }

function recordingHooks (): WriterHooks & Recorded {
  const drops: Recorded['drops'] = []
  return { drops, dropped: (connection, reason) => { drops.push({ id: connection.id, reason }) } }
}

/** The TCP socket under a ws socket, with what was written to it directly. */
interface Stream {
  socket: Socket
  writes: unknown[]
}

function watchStream (socket: WebSocket): Stream {
  const tcp = (socket as unknown as { _socket: Socket })._socket
  const writes: unknown[] = []
  const write = tcp.write
  // Record the chunk objects only; the call itself is unchanged.
  tcp.write = function (this: Socket, ...args: unknown[]): boolean {
    writes.push(args[0])
    return (write as (...rest: unknown[]) => boolean).apply(this, args)
  }
  return { socket: tcp, writes }
}

interface Client {
  ws: WebSocket
  messages: Array<{ text: string, binary: boolean }>
  closed: Promise<{ code: number, reason: string }>
  /** Resolves once `count` messages arrived; rejects after the bound. */
  received: (count: number, ms?: number) => Promise<void>
}

interface Peer {
  client: Client
  connection: Connection
  stream: Stream
}

interface Harness {
  hooks: WriterHooks & Recorded
  connect: (limits?: ConnectionLimits) => Promise<Peer>
}

async function startServer (t: Tap, deflate: boolean, fastPath?: boolean): Promise<Harness> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: deflate ? { threshold: 0 } : false })
  await within(new Promise<void>((resolve) => wss.once('listening', resolve)), WAIT_MS, 'listen')
  const url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`
  const hooks = recordingHooks()
  const writer = new Writer(hooks, fastPath)
  const clients: WebSocket[] = []
  let nextLimits = roomy
  let accepted: ((connection: Connection) => void) | undefined
  wss.on('connection', (socket) => {
    const connection = new Connection(socket, attributes, { id: 1 }, nextLimits, writer)
    socket.on('error', () => {})
    accepted?.(connection)
  })
  t.teardown(async () => {
    for (const client of clients) client.terminate()
    for (const socket of wss.clients) socket.terminate()
    await within(new Promise<void>((resolve) => wss.close(() => resolve())), WAIT_MS, 'server close')
  })

  const connect = async (limits = roomy): Promise<Peer> => {
    nextLimits = limits
    const serverSide = new Promise<Connection>((resolve) => { accepted = resolve })
    const ws = new WebSocket(url, { perMessageDeflate: deflate })
    clients.push(ws)
    ws.on('error', () => {})
    const messages: Client['messages'] = []
    let waiting: { count: number, resolve: () => void } | undefined
    ws.on('message', (data, binary) => {
      messages.push({ text: Buffer.isBuffer(data) ? data.toString('utf8') : Buffer.concat(data as Buffer[]).toString('utf8'), binary })
      if (waiting !== undefined && messages.length >= waiting.count) waiting.resolve()
    })
    const closed = new Promise<{ code: number, reason: string }>((resolve) => {
      ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }))
    })
    const received = async (count: number, ms = WAIT_MS): Promise<void> => {
      if (messages.length >= count) return
      await within(new Promise<void>((resolve) => { waiting = { count, resolve } }), ms, `${count} messages (got ${messages.length})`)
    }
    await within(new Promise<void>((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) }), WAIT_MS, 'client open')
    const connection = await within(serverSide, WAIT_MS, 'server connection')
    return { client: { ws, messages, closed, received }, connection, stream: watchStream(connection.socket) }
  }
  return { hooks, connect }
}

/** How one frame is handed to a connection. */
type Path = 'wire' | 'sendFrame' | 'payload'

interface Sent { text: string, accepted: boolean, wire?: Buffer }

/** Sends one frame by `path`; the wire form goes through encodePacket/decodePacket as the bus does. */
function sendBy (connection: Connection, path: Path, frame: ServerFrame): Sent {
  if (path === 'sendFrame') return { text: JSON.stringify(frame), accepted: connection.sendFrame(frame) }
  const packet = decodePacket(encodePacket({ audience: { scope: 'chat', chat: 'c1' }, frame }, Date.now()))
  if (path === 'payload') return { text: packet.frame.toString('utf8'), accepted: connection.send(packet.frame) }
  return { text: packet.frame.toString('utf8'), accepted: connection.send(packet.frame, packet.wire), wire: packet.wire }
}

const PATHS: Path[] = ['wire', 'sendFrame', 'wire', 'wire', 'payload']

/** Asserts the client got exactly `sent`, in order, each as a text message. */
function assertReceived (t: Tap, client: Client, sent: string[], what: string): void {
  t.equal(client.messages.length, sent.length, `${what}: message count`)
  const binary = client.messages.filter((message) => message.binary).length
  t.equal(binary, 0, `${what}: all text messages`)
  const firstWrong = client.messages.findIndex((message, index) => message.text !== sent[index])
  t.equal(firstWrong, -1, `${what}: every message equal to the sent one, in order${firstWrong < 0 ? '' : ` (first difference at #${firstWrong})`}`)
  const sequence = client.messages.map((message) => (JSON.parse(message.text) as { data: { seq: number } }).data.seq)
  t.same(sequence, sent.map((text) => (JSON.parse(text) as { data: { seq: number } }).data.seq), `${what}: sequence numbers`)
}

/** The wire buffers written to the TCP socket as they are (the direct path), in the order sent. */
function directWrites (stream: Stream, sent: Sent[]): number {
  return sent.filter((entry) => entry.wire !== undefined && stream.writes.includes(entry.wire)).length
}

t.test('one synchronous loop: wire frames, ws frames, corked and released in send order', async (t) => {
  const { hooks, connect } = await startServer(t, false)
  const a = await connect()
  const b = await connect()
  t.equal(a.connection.socket.extensions, '', 'no extension negotiated')
  await nextTurn()

  const sentA: Sent[] = []
  const sentB: Sent[] = []
  // First send of the turn on a: a small wire frame, written at once (not corked, nothing left buffered).
  sentA.push(sendBy(a.connection, 'wire', frameOf(0, 100)))
  t.equal(a.stream.socket.writableCorked, 0, 'first direct write of the turn is not corked')
  t.equal(a.stream.socket.writableLength, 0, 'first direct write of the turn left for the kernel at once')
  sentA.push(sendBy(a.connection, 'wire', frameOf(1, 100)))
  t.equal(a.stream.socket.writableCorked, 1, 'second direct write of the turn corks the socket')
  t.ok(a.stream.socket.writableLength > 0, 'and waits in the socket buffer')
  let seq = 2
  for (let round = 0; round < 6; round++) {
    for (const size of SIZES) {
      const path = PATHS[seq % PATHS.length] as Path
      const frame = frameOf(seq, size)
      seq += 1
      if (path === 'wire') {
        // One packet for both sockets: the same bytes are written to each.
        const packet = decodePacket(encodePacket({ audience: { scope: 'chat', chat: 'c1' }, frame }, Date.now()))
        sentA.push({ text: packet.frame.toString('utf8'), accepted: a.connection.send(packet.frame, packet.wire), wire: packet.wire })
        sentB.push({ text: packet.frame.toString('utf8'), accepted: b.connection.send(packet.frame, packet.wire), wire: packet.wire })
      } else {
        sentA.push(sendBy(a.connection, path, frame))
        sentB.push(sendBy(b.connection, path, frame))
      }
    }
  }
  t.equal(a.stream.socket.writableCorked, 1, 'a stays corked (once) until the turn ends')
  t.equal(b.stream.socket.writableCorked, 1, 'b was corked from its second direct write')
  await nextTurn()
  await nextTurn()
  t.equal(a.stream.socket.writableCorked, 0, 'a uncorked after the turn')
  t.equal(b.stream.socket.writableCorked, 0, 'b uncorked after the turn')

  t.ok([...sentA, ...sentB].every((entry) => entry.accepted), 'every send returned true')
  await a.client.received(sentA.length)
  await b.client.received(sentB.length)
  assertReceived(t, a.client, sentA.map((entry) => entry.text), 'a')
  assertReceived(t, b.client, sentB.map((entry) => entry.text), 'b')
  const wiresA = sentA.filter((entry) => entry.wire !== undefined).length
  t.ok(wiresA > SIZES.length, `a: ${wiresA} wire frames sent`)
  t.equal(directWrites(a.stream, sentA), wiresA, 'a: every wire frame went to the TCP socket as is')
  t.equal(directWrites(b.stream, sentB), sentB.filter((entry) => entry.wire !== undefined).length, 'b: every wire frame went to the TCP socket as is')
  t.same(hooks.drops, [], 'nothing dropped')
})

t.test('under a burst a socket corks from its first frame; a turn with one frame ends the burst', async (t) => {
  const { hooks, connect } = await startServer(t, false)
  const peer = await connect()
  await nextTurn()
  const socket = peer.stream.socket
  const sent: Sent[] = []
  let seq = 0
  const send = (): void => { sent.push(sendBy(peer.connection, 'wire', frameOf(seq++, 100))) }

  send()
  t.equal(socket.writableCorked, 0, 'turn 1, one frame: written at once')
  await nextTurn()
  send()
  send()
  t.equal(socket.writableCorked, 1, 'turn 2, a second frame: corked')
  await nextTurn()
  send()
  t.equal(socket.writableCorked, 1, 'turn 3 follows a burst: its first frame is corked too')
  t.ok(socket.writableLength > 0, 'and waits for the end of the turn')
  await nextTurn()
  t.equal(socket.writableCorked, 0, 'released when that turn ends')
  send()
  t.equal(socket.writableCorked, 0, 'turn 4 follows a turn of one frame: written at once again')
  t.equal(socket.writableLength, 0, 'nothing left buffered')

  await peer.client.received(sent.length)
  assertReceived(t, peer.client, sent.map((entry) => entry.text), 'across the turns')
  t.same(hooks.drops, [], 'nothing dropped')
})

t.test('several turns: batches of every size and path arrive complete and in order', async (t) => {
  const { hooks, connect } = await startServer(t, false)
  const peers = [await connect(), await connect(), await connect()]
  const sent = peers.map((): Sent[] => [])
  let seq = 0
  // Batch sizes: one frame alone in its turn, and batches that cork.
  const batches = [1, 5, 1, 1, 12, 3, 1, 20, 2, 1, 7]
  for (const [turn, count] of batches.entries()) {
    for (let index = 0; index < count; index++) {
      const size = SIZES[(seq * 7) % SIZES.length] as number
      const path = PATHS[(seq + turn) % PATHS.length] as Path
      const frame = frameOf(seq, size)
      seq += 1
      peers.forEach((peer, which) => { (sent[which] as Sent[]).push(sendBy(peer.connection, path, frame)) })
    }
    await nextTurn()
    for (const peer of peers) t.equal(peer.stream.socket.writableCorked, 0, `turn ${turn}: uncorked`)
  }
  t.ok(sent.flat().every((entry) => entry.accepted), 'every send returned true')
  for (const [which, peer] of peers.entries()) {
    const expected = sent[which] as Sent[]
    await peer.client.received(expected.length)
    assertReceived(t, peer.client, expected.map((entry) => entry.text), `client ${which}`)
    t.equal(directWrites(peer.stream, expected), expected.filter((entry) => entry.wire !== undefined).length, `client ${which}: wire frames written directly`)
  }
  t.same(hooks.drops, [], 'nothing dropped')
})

t.test('a client that stops reading is closed 1013 once; the others get everything', async (t) => {
  const { hooks, connect } = await startServer(t, false)
  const limits: ConnectionLimits = { ...roomy, maxBufferedBytes: 256 * 1024 }
  const slow = await connect(limits)
  const fast = [await connect(limits), await connect(limits)]
  slow.client.ws.pause()

  // Each turn stays well under the bound for a reading client (frames of a turn wait corked until it ends).
  const FRAME = 16 * 1024
  const PER_TURN = 6
  const sentFast: string[] = []
  const sentSlow: string[] = []
  const acceptedSlow: boolean[] = []
  let seq = 0
  const deadline = Date.now() + 20_000
  let fastRefused = 0
  let turnsAfterDrop = -1
  while (turnsAfterDrop < 5) {
    if (Date.now() > deadline) break
    for (let index = 0; index < PER_TURN; index++) {
      const frame = frameOf(seq, FRAME + (seq % 3))
      const packet = decodePacket(encodePacket({ audience: { scope: 'chat', chat: 'c1' }, frame }, Date.now()))
      const useWire = seq % 4 !== 1
      seq += 1
      const text = packet.frame.toString('utf8')
      const accepted = useWire ? slow.connection.send(packet.frame, packet.wire) : slow.connection.sendFrame(frame)
      acceptedSlow.push(accepted)
      if (accepted) sentSlow.push(text)
      for (const peer of fast) {
        if (!(useWire ? peer.connection.send(packet.frame, packet.wire) : peer.connection.sendFrame(frame))) fastRefused += 1
      }
      sentFast.push(text)
    }
    if (turnsAfterDrop >= 0) turnsAfterDrop += 1
    else if (hooks.drops.length > 0) turnsAfterDrop = 0
    await nextTurn()
  }
  t.equal(fastRefused, 0, 'the reading clients accepted every frame')
  const slowDrops = hooks.drops.filter((drop) => drop.reason === 'slow_consumer')
  t.equal(slowDrops.length, 1, `slow_consumer reported once (after ${sentSlow.length} frames accepted for the slow client)`)
  t.equal(slowDrops[0]?.id, slow.connection.id, 'for the slow client')
  t.ok(hooks.drops.every((drop) => drop.id === slow.connection.id), 'no drop for the reading clients')
  t.equal(slow.connection.closeCode, 1013, 'server side closed with 1013')
  const firstRefused = acceptedSlow.indexOf(false)
  t.ok(firstRefused > 0 && acceptedSlow.slice(firstRefused).every((accepted) => !accepted), 'every send after the first refusal is refused')
  t.equal(hooks.drops.filter((drop) => drop.reason === 'closing').length, acceptedSlow.length - firstRefused - 1, 'the later refusals are reported as closing')
  t.equal(slow.connection.droppedWhileClosing, acceptedSlow.length - firstRefused - 1, 'droppedWhileClosing counts them')

  // Reading again, the slow client drains what was accepted for it and then the close frame.
  slow.client.ws.resume()
  const closed = await within(slow.client.closed, WAIT_MS, 'slow client close')
  t.equal(closed.code, 1013, 'slow client sees close code 1013')
  t.equal(closed.reason, 'slow consumer')
  // A clean 1013 handshake: every frame accepted before the close arrived ahead of the close frame.
  assertReceived(t, slow.client, sentSlow, 'slow client, everything accepted for it')

  for (const [which, peer] of fast.entries()) {
    await peer.client.received(sentFast.length, 10_000)
    assertReceived(t, peer.client, sentFast, `reading client ${which}`)
    t.equal(peer.client.ws.readyState, WebSocket.OPEN, `reading client ${which} still open`)
  }
})

t.test('after close: sends are refused, reported as closing and counted', async (t) => {
  const { hooks, connect } = await startServer(t, false)
  const peer = await connect()
  const other = await connect()
  await nextTurn()
  // Frames sent in the turn of the close (one direct, the rest corked) still go out ahead of the close frame.
  const before: Sent[] = [sendBy(peer.connection, 'wire', frameOf(0, 200)), sendBy(peer.connection, 'wire', frameOf(1, 70_000)), sendBy(peer.connection, 'sendFrame', frameOf(2, 300))]
  t.ok(before.every((entry) => entry.accepted), 'sends before the close return true')
  peer.connection.close(4000, 'bye')
  t.equal(peer.connection.closeCode, 4000)
  t.equal(peer.connection.socket.readyState, WebSocket.CLOSING, 'closing')

  const refused: boolean[] = []
  const frame = frameOf(10, 500)
  const packet = decodePacket(encodePacket({ audience: { scope: 'chat', chat: 'c1' }, frame }, Date.now()))
  refused.push(peer.connection.send(packet.frame, packet.wire))
  refused.push(peer.connection.sendFrame(frame))
  refused.push(peer.connection.send(packet.frame))
  t.same(refused, [false, false, false], 'sends while closing return false')
  t.same(hooks.drops.map((drop) => drop.reason), ['closing', 'closing', 'closing'], 'each reported as closing')
  t.ok(hooks.drops.every((drop) => drop.id === peer.connection.id), 'for this connection')
  t.equal(peer.connection.droppedWhileClosing, 3)
  t.notOk(peer.stream.writes.includes(packet.wire), 'the refused wire frame was not written')
  t.equal(other.connection.send(packet.frame, packet.wire), true, 'another connection still takes the same packet')

  const closed = await within(peer.client.closed, WAIT_MS, 'client close')
  t.equal(closed.code, 4000, 'client sees the close code')
  t.equal(closed.reason, 'bye')
  assertReceived(t, peer.client, before.map((entry) => entry.text), 'frames sent before the close')

  await within(new Promise<void>((resolve) => {
    if (peer.connection.socket.readyState === WebSocket.CLOSED) resolve()
    else peer.connection.socket.once('close', () => resolve())
  }), WAIT_MS, 'server socket closed')
  t.equal(peer.connection.send(packet.frame, packet.wire), false, 'send on a closed socket returns false')
  t.equal(peer.connection.sendFrame(frame), false)
  t.equal(peer.connection.droppedWhileClosing, 5, 'counted too')
  t.equal(hooks.drops.length, 5)
  t.ok(hooks.drops.every((drop) => drop.reason === 'closing'), 'all as closing, never slow_consumer')
  peer.connection.close(1000, 'again')
  t.equal(peer.connection.closeCode, 4000, 'a second close keeps the first code')

  await other.client.received(1)
  assertReceived(t, other.client, [packet.frame.toString('utf8')], 'the other client')
})

t.test('permessage-deflate negotiated: sends fall back to ws and arrive intact', async (t) => {
  const { hooks, connect } = await startServer(t, true)
  const peer = await connect()
  t.match(peer.connection.socket.extensions, /permessage-deflate/, 'server negotiated permessage-deflate')
  t.match(peer.client.ws.extensions, /permessage-deflate/, 'client negotiated permessage-deflate')

  const sent: Sent[] = []
  let seq = 0
  // One synchronous loop (compression is asynchronous in ws: a direct write would overtake it) ...
  for (const size of [...SIZES, ...SIZES]) {
    sent.push(sendBy(peer.connection, PATHS[seq % PATHS.length] as Path, frameOf(seq, size)))
    seq += 1
  }
  // ... then a few turns.
  for (let turn = 0; turn < 4; turn++) {
    await nextTurn()
    for (const size of [70, 130, 66_000]) {
      sent.push(sendBy(peer.connection, turn % 2 === 0 ? 'wire' : 'sendFrame', frameOf(seq, size)))
      seq += 1
    }
  }
  t.ok(sent.every((entry) => entry.accepted), 'every send returned true')
  await peer.client.received(sent.length)
  assertReceived(t, peer.client, sent.map((entry) => entry.text), 'deflate client')
  const wires = sent.filter((entry) => entry.wire !== undefined).length
  t.ok(wires > 0, `${wires} frames offered with their wire form`)
  t.equal(directWrites(peer.stream, sent), 0, 'no wire frame was written to the TCP socket directly')
  t.equal(peer.stream.socket.writableCorked, 0, 'the connection never corks a deflate socket')
  t.same(hooks.drops, [], 'nothing dropped')
})

t.test('while ws is still reading a Blob it was given, wire frames queue behind it instead of overtaking', async (t) => {
  const { hooks, connect } = await startServer(t, false)
  const peer = await connect()
  await nextTurn()
  const sent: Sent[] = []
  const blobFrame = JSON.stringify(frameOf(0, 2000))
  // ws reads a Blob asynchronously; its sender is busy until then, and queues what comes next.
  peer.connection.socket.send(new Blob([blobFrame]), { binary: false })
  sent.push({ text: blobFrame, accepted: true })
  let seq = 1
  for (const size of SIZES) {
    sent.push(sendBy(peer.connection, seq % 3 === 2 ? 'sendFrame' : 'wire', frameOf(seq, size)))
    seq += 1
  }
  t.ok(sent.every((entry) => entry.accepted), 'every send returned true')
  t.equal(directWrites(peer.stream, sent), 0, 'no wire frame written directly while ws is busy')
  await peer.client.received(sent.length)
  assertReceived(t, peer.client, sent.map((entry) => entry.text), 'client')

  // Once ws is idle again the direct path is back.
  await nextTurn()
  const after = sendBy(peer.connection, 'wire', frameOf(seq, 300))
  t.equal(directWrites(peer.stream, [after]), 1, 'direct write once ws is idle')
  await peer.client.received(sent.length + 1)
  t.equal(peer.client.messages[sent.length]?.text, after.text, 'and it arrives')
  t.same(hooks.drops, [], 'nothing dropped')
})

/*
 * Frames corked for the rest of a turn count in ws's bufferedAmount; they are not a backlog the peer
 * failed to read, so one turn's burst to a reading client must not close it as a slow consumer.
 */

t.test('a reading client is not cut as a slow consumer by one turn\'s burst', async (t) => {
  const { hooks, connect } = await startServer(t, false)
  const limits: ConnectionLimits = { ...roomy, maxBufferedBytes: 256 * 1024 }
  for (const path of ['sendFrame', 'wire'] as const) {
    const peer = await connect(limits)
    await nextTurn()
    const sent: Sent[] = []
    // 640 KiB in one turn to a client that is reading.
    for (let seq = 0; seq < 10; seq++) sent.push(sendBy(peer.connection, path, frameOf(seq, 64 * 1024)))
    t.same(sent.map((entry) => entry.accepted), sent.map(() => true), `${path}: every frame accepted`)
    t.same(hooks.drops, [], `${path}: nothing dropped`)
    t.equal(peer.connection.closeCode, undefined, `${path}: not closed`)
    if (path === 'wire') {
      await peer.client.received(sent.filter((entry) => entry.accepted).length)
      assertReceived(t, peer.client, sent.filter((entry) => entry.accepted).map((entry) => entry.text), 'wire: what was accepted still arrives')
    }
    hooks.drops.length = 0
  }
})

t.test('the installed ws is the release whose internals the fast path reads (pinned, one copy)', async (t) => {
  t.equal(installedWsVersion(), FAST_PATH_WS_VERSION, 'package.json pins ws and overrides @fastify/websocket\'s copy; move both together')
  t.ok(new Writer({ dropped: () => {} }).fastPath, 'so the fast path is on')
})

t.test('with any other ws the writer falls back to ws.send: same frames, same order, nothing written directly', async (t) => {
  const { hooks, connect } = await startServer(t, false, false)
  const peer = await connect()
  await nextTurn()
  const sent: Sent[] = []
  let seq = 0
  for (const size of SIZES) sent.push(sendBy(peer.connection, PATHS[seq % PATHS.length] as Path, frameOf(seq++, size)))
  t.equal(directWrites(peer.stream, sent), 0, 'no wire frame written to the TCP socket directly')
  t.equal(peer.stream.socket.writableCorked, 0, 'never corked')
  await peer.client.received(sent.length)
  assertReceived(t, peer.client, sent.map((entry) => entry.text), 'client')
  t.same(hooks.drops, [], 'nothing dropped')
})
