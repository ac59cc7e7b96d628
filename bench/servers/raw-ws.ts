import { createServer } from 'node:http'
import type { Socket } from 'node:net'
import { Redis } from 'ioredis'
import WebSocket, { WebSocketServer } from 'ws'
import { messageRooms, type RoutedMessage } from '../rooms.js'
import { exitOnSignal, ingestHandler, listen, portFromEnv } from './http.js'

/**
 * The floor: what Node does with the `ws` library and nothing else. The frame is serialized once and
 * the same bytes go to every socket of the message's rooms with the idiomatic `ws.send`. With
 * REDIS_URL the accepting node publishes `rooms\nframe` and every node (itself included) fans out
 * what it receives, like the relay's bus. With CORK_PER_TURN=1 every socket written in a turn of the
 * event loop is corked until the turn ends (its frames leave in one writev): the best a hand-written
 * server does, and what the relay's burst path does too.
 */
const CHANNEL = 'bench-ws'
const TEXT = { binary: false }
const rooms = new Map<string, Set<WebSocket>>()
const corkPerTurn = process.env.CORK_PER_TURN === '1'
const corked = new Set<Socket>()
let turnScheduled = false

function uncorkAll (): void {
  turnScheduled = false
  for (const stream of corked) stream.uncork()
  corked.clear()
}

/** ws keeps the TCP socket it writes to in `_socket` (ws 8). */
function streamOf (socket: WebSocket): Socket {
  return (socket as unknown as { _socket: Socket })._socket
}

function fanout (names: string[], frame: Buffer): void {
  for (const name of names) {
    const room = rooms.get(name)
    if (room === undefined) continue
    for (const socket of room) {
      if (socket.readyState !== WebSocket.OPEN) continue
      if (corkPerTurn) {
        const stream = streamOf(socket)
        if (!corked.has(stream)) {
          corked.add(stream)
          stream.cork()
        }
      }
      socket.send(frame, TEXT)
    }
  }
  if (corkPerTurn && !turnScheduled) {
    turnScheduled = true
    setImmediate(uncorkAll)
  }
}

const redisUrl = process.env.REDIS_URL
const publisher = redisUrl === undefined ? undefined : new Redis(redisUrl)
const subscriber = publisher?.duplicate()

const server = createServer(ingestHandler(async (body) => {
  const message = (body as { message: RoutedMessage }).message
  const frame = Buffer.from(JSON.stringify({ type: 'message_added', data: { message } }))
  const names = messageRooms(message)
  if (publisher === undefined) return fanout(names, frame)
  await publisher.publish(CHANNEL, Buffer.concat([Buffer.from(`${names.join(',')}\n`), frame]))
}))

const wss = new WebSocketServer({ server, perMessageDeflate: false, clientTracking: false, maxPayload: 65536 })
wss.on('connection', (socket, request) => {
  const names = new URL(request.url ?? '/', 'http://localhost').searchParams.get('rooms')?.split(',') ?? []
  for (const name of names) {
    let room = rooms.get(name)
    if (room === undefined) rooms.set(name, room = new Set())
    room.add(socket)
  }
  socket.on('error', () => socket.terminate())
  socket.once('close', () => {
    for (const name of names) rooms.get(name)?.delete(socket)
  })
})

if (subscriber !== undefined) {
  await subscriber.subscribe(CHANNEL)
  subscriber.on('messageBuffer', (_channel: Buffer, packet: Buffer) => {
    const split = packet.indexOf(0x0a)
    fanout(packet.toString('utf8', 0, split).split(','), packet.subarray(split + 1))
  })
}

exitOnSignal(async () => {
  server.closeAllConnections()
  await Promise.all([subscriber?.quit(), publisher?.quit()])
})
await listen(server, portFromEnv())
