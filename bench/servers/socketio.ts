import { createServer } from 'node:http'
import { createAdapter } from '@socket.io/redis-adapter'
import { Redis } from 'ioredis'
import { Server } from 'socket.io'
import { messageRooms, type RoutedMessage } from '../rooms.js'
import { exitOnSignal, ingestHandler, listen, portFromEnv } from './http.js'

/**
 * What people run today: Socket.IO 4 (WebSocket transport, no compression) with rooms, and with
 * REDIS_URL the official @socket.io/redis-adapter on ioredis. A message is emitted once to the rooms
 * its fields name; Socket.IO encodes it once and pre-frames it for every socket.
 */
const server = createServer(ingestHandler((body) => {
  const message = (body as { message: RoutedMessage }).message
  io.to(messageRooms(message)).emit('message_added', { message })
}))

const io = new Server(server, { transports: ['websocket'], serveClient: false, perMessageDeflate: false })
const redisUrl = process.env.REDIS_URL
const publisher = redisUrl === undefined ? undefined : new Redis(redisUrl)
const subscriber = publisher?.duplicate()
if (publisher !== undefined && subscriber !== undefined) io.adapter(createAdapter(publisher, subscriber))

io.on('connection', (socket) => {
  const rooms = socket.handshake.query.rooms
  if (typeof rooms === 'string' && rooms !== '') void socket.join(rooms.split(','))
})

exitOnSignal(async () => {
  io.disconnectSockets(true)
  server.closeAllConnections()
  await Promise.all([subscriber?.quit(), publisher?.quit()])
})
await listen(server, portFromEnv())
