import fp from 'fastify-plugin'
import { createApiTokenCheck, createTokenVerifier } from '../src/auth.js'
import './types.js'

/** One guard for both doors: Api-Token for HTTP ingest, JWT verification for sockets. */
export default fp(async (app) => {
  const apiTokenMatches = createApiTokenCheck(app.config.apiTokens)
  app.decorate('verifyToken', createTokenVerifier(app.config))
  app.decorate('requireApiToken', async (request, reply) => {
    const header = request.headers['api-token']
    if (apiTokenMatches(typeof header === 'string' ? header : undefined)) return
    await reply.code(401).send({
      statusCode: 401,
      code: 'UNAUTHORIZED',
      error: 'Unauthorized',
      message: header === undefined ? 'missing Api-Token header' : 'invalid Api-Token'
    })
  })
}, { name: 'auth', dependencies: ['config'] })
