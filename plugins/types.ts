import type { Bus } from '../src/bus.js'
import type { ChatLog } from '../src/chat-log.js'
import type { Config } from '../src/config.js'
import type { Hub } from '../src/hub.js'
import type { Metrics } from '../src/metrics.js'
import type { Presence } from '../src/presence.js'
import type { Publisher } from '../src/publisher.js'
import type { SocketSessions } from '../src/sessions.js'
import type { Principal } from '../src/auth.js'
import type { FastifyReply, FastifyRequest } from 'fastify'

declare module 'fastify' {
  interface FastifyInstance {
    config: Config
    metrics: Metrics
    bus: Bus
    presence: Presence
    chatLog: ChatLog
    hub: Hub
    publisher: Publisher
    sessions: SocketSessions
    verifyToken: (token: string) => Principal
    requireApiToken: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
  }
}
