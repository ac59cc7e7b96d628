import type { FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { createApiTokenCheck, createTokenVerifier, type Principal } from '../src/auth.js'

export interface Auth {
  /** A socket's JWT → its principal; throws SocketAuthError with the close code. */
  verifyToken: (token: string) => Principal
  /** onRequest hook of the ingest routes: 401 unless `Api-Token` is one of API_TOKEN. */
  requireApiToken: (request: FastifyRequest, reply: FastifyReply) => Promise<void>
}

declare module 'fastify' {
  interface FastifyInstance {
    auth: Auth
  }
}

/** One guard for both doors: Api-Token for HTTP ingest, JWT verification for sockets. */
export default fp(async (app) => {
  const apiTokenMatches = createApiTokenCheck(app.config.apiTokens)
  const requireApiToken: Auth['requireApiToken'] = async (request, reply) => {
    const header = request.headers['api-token']
    if (apiTokenMatches(typeof header === 'string' ? header : undefined)) return
    await reply.code(401).send({
      statusCode: 401,
      code: 'UNAUTHORIZED',
      error: 'Unauthorized',
      message: header === undefined ? 'missing Api-Token header' : 'invalid Api-Token'
    })
  }
  app.decorate('auth', { verifyToken: createTokenVerifier(app.config), requireApiToken })
}, { name: 'auth', dependencies: ['config'] })
