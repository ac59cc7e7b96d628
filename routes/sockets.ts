import type { ServerResponse } from 'node:http'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import type WebSocket from 'ws'
import type { SocketRequest } from '../src/socket/admission.js'

function socketRequest (request: FastifyRequest): SocketRequest {
  const query = request.query as Record<string, unknown>
  const authorization = request.headers.authorization
  const bearer = typeof authorization === 'string' && /^Bearer\s+/i.test(authorization)
    ? authorization.replace(/^Bearer\s+/i, '').trim()
    : undefined
  const socketRequest: SocketRequest = {
    token: typeof query.token === 'string' ? query.token : bearer,
    origin: request.headers.origin,
    requestedChat: typeof query.chat === 'string' ? query.chat : undefined,
    address: request.ip
  }
  if (typeof query.since === 'string') socketRequest.since = query.since
  if (typeof query.history === 'string') socketRequest.history = query.history
  return socketRequest
}

/**
 * @fastify/websocket leaves the upgrade's Fastify request and reply reachable for the socket's whole
 * life: its `error` listener closes over both, and the TCP socket still holds the ServerResponse it made
 * (with the request, its headers and URL, and a child logger). That is most of a relay connection's
 * memory, never used after the handover, so the socket routes let them go: the response is detached
 * from the TCP socket and the listener removed (SocketSessions attaches its own to every socket).
 */
const upgradeResponses = new WeakMap<FastifyRequest, ServerResponse>()

function keepUpgradeResponse (request: FastifyRequest, reply: FastifyReply, done: () => void): void {
  upgradeResponses.set(request, reply.raw)
  done()
}

function releaseUpgrade (socket: WebSocket, request: FastifyRequest): void {
  const response = upgradeResponses.get(request)
  upgradeResponses.delete(request)
  if (response?.socket != null) response.detachSocket(response.socket)
  socket.removeAllListeners('error')
}

/** `/chat` (one chat room) and `/broadcast` (operator console): thin doors into SocketSessions. */
const sockets: FastifyPluginAsync = async (app) => {
  app.get('/chat', { websocket: true, onRequest: keepUpgradeResponse }, (socket, request) => {
    releaseUpgrade(socket, request)
    app.sockets.open('chat', socket, socketRequest(request))
  })
  app.get('/broadcast', { websocket: true, onRequest: keepUpgradeResponse }, (socket, request) => {
    releaseUpgrade(socket, request)
    app.sockets.open('broadcast', socket, socketRequest(request))
  })
}

export default sockets
