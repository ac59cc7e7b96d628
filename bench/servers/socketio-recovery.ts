import { createServer } from 'node:http'
import { createAdapter } from '@socket.io/redis-streams-adapter'
import { Redis } from 'ioredis'
import { Server } from 'socket.io'
import { messageRooms, type RoutedMessage } from '../rooms.js'
import { exitOnSignal, ingestHandler, listen, portFromEnv } from './http.js'

/**
 * The peer of the reconnect storm (f): Socket.IO 4 with the official @socket.io/redis-streams-adapter
 * (every broadcast is an XADD to one Redis stream that each node reads with XREAD) and
 * `connectionStateRecovery`, so a client that reconnects, to any node, with its session id and the
 * stream offset of its last packet gets its rooms back and the packets it missed. Ingest and rooms are
 * those of servers/socketio.ts. SIGTERM closes the sockets spread over DRAIN_WINDOW_MS in 100 ms
 * slices, as the relay's drain does, each with a transport close, which persists its session in Redis
 * (a `disconnect(true)` would not: the client would take it for a deliberate kick and not reconnect).
 */
const SLICE_MS = 100
const redisUrl = process.env.REDIS_URL
if (redisUrl === undefined) throw new Error('REDIS_URL must name the Redis both nodes share')
const drainWindowMs = Number(process.env.DRAIN_WINDOW_MS ?? '5000')

const server = createServer(ingestHandler((body) => {
  const message = (body as { message: RoutedMessage }).message
  io.to(messageRooms(message)).emit('message_added', { message })
}))

// Fastify's default (the relay's): Node's 5 s lets an idle keep-alive socket of the poster close under a request.
server.keepAliveTimeout = 72_000
const redis = new Redis(redisUrl)
const io = new Server(server, {
  transports: ['websocket'],
  serveClient: false,
  perMessageDeflate: false,
  adapter: createAdapter(redis),
  // The library's default window (2 min); the middlewares are skipped on recovery as its docs advise.
  connectionStateRecovery: { maxDisconnectionDuration: 120_000, skipMiddlewares: true }
})

io.on('connection', (socket) => {
  // A recovered socket has its rooms back from the session; joining them again would be a no-op.
  if (socket.recovered) return
  const rooms = socket.handshake.query.rooms
  if (typeof rooms === 'string' && rooms !== '') void socket.join(rooms.split(','))
})

async function drain (): Promise<void> {
  const open = [...io.of('/').sockets.values()]
  const slices = Math.max(1, Math.min(open.length, Math.floor(drainWindowMs / SLICE_MS)))
  const batch = Math.ceil(open.length / slices)
  for (let slice = 0; slice * batch < open.length; slice++) {
    if (slice > 0) await new Promise((resolve) => setTimeout(resolve, drainWindowMs / slices))
    for (const socket of open.slice(slice * batch, (slice + 1) * batch)) socket.conn.close()
  }
  // Whatever is left (sockets that connected meanwhile) closes with "server shutting down", also recoverable.
  await io.close()
  // QUIT runs after the session SETs already queued on this connection.
  await redis.quit()
}

exitOnSignal(drain, drainWindowMs + 5000)
await listen(server, portFromEnv())
