import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import type { SocketRequest } from '../src/sessions.js'
import '../plugins/types.js'

function socketRequest (request: FastifyRequest): SocketRequest {
  const query = request.query as Record<string, unknown>
  const authorization = request.headers.authorization
  const bearer = typeof authorization === 'string' && /^Bearer\s+/i.test(authorization)
    ? authorization.replace(/^Bearer\s+/i, '').trim()
    : undefined
  return {
    token: typeof query.token === 'string' ? query.token : bearer,
    origin: request.headers.origin,
    requestedChat: typeof query.chat === 'string' ? query.chat : undefined
  }
}

/** `/chat` (one chat room) and `/broadcast` (operator console): thin doors into SocketSessions. */
const sockets: FastifyPluginAsync = async (app) => {
  app.get('/chat', { websocket: true }, (socket, request) => {
    app.sessions.open('chat', socket, socketRequest(request))
  })
  app.get('/broadcast', { websocket: true }, (socket, request) => {
    app.sessions.open('broadcast', socket, socketRequest(request))
  })
}

export default sockets
