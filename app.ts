import { STATUS_CODES } from 'node:http'
import websocket from '@fastify/websocket'
import { TypeBoxValidatorCompiler, type TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Fastify, { type FastifyError, type FastifyInstance, type FastifyServerOptions } from 'fastify'
import authPlugin from './plugins/auth.js'
import configPlugin from './plugins/config.js'
import demoPlugin, { type DemoOptions } from './plugins/demo.js'
import docsPlugin from './plugins/docs.js'
import idempotencyPlugin from './plugins/idempotency.js'
import metricsPlugin from './plugins/metrics.js'
import publisherPlugin from './plugins/publisher.js'
import socketsPlugin from './plugins/sockets.js'
import storesPlugin from './plugins/stores.js'
import batchRoutes from './routes/batch.js'
import healthRoutes from './routes/health.js'
import ingestRoutes from './routes/ingest.js'
import presenceRoutes from './routes/presence.js'
import socketRoutes from './routes/sockets.js'
import { StoreUnavailableError } from './src/stores/store-errors.js'
import type { Config } from './src/config.js'
import { nestedDeeperThan } from './src/protocol/json.js'
import { logRedaction } from './src/log-redaction.js'

export interface BuildOptions {
  config: Config
  logger?: FastifyServerOptions['logger']
  /** Where the DEMO=true pages and SDK are served from (tests); nothing without DEMO. */
  demo?: DemoOptions
}

export async function buildApp (options: BuildOptions): Promise<FastifyInstance> {
  const { config } = options
  const logger = options.logger ?? { level: config.LOG_LEVEL }
  const app = Fastify({
    // Never a query string (socket tokens travel there) nor headers (Api-Token, Authorization).
    logger: logger === false ? false : { ...(logger === true ? {} : logger), ...logRedaction },
    bodyLimit: config.BODY_LIMIT
  }).withTypeProvider<TypeBoxTypeProvider>()
  app.setValidatorCompiler(TypeBoxValidatorCompiler)
  // Ingest is JSON only: anything else is 415.
  app.removeContentTypeParser('text/plain')
  // JSON nested past MAX_JSON_DEPTH is refused before it is parsed: it would overflow the stack later.
  const parseJson = app.getDefaultJsonParser('error', 'error')
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (nestedDeeperThan(body as string, config.MAX_JSON_DEPTH)) {
      const error = Object.assign(new Error(`body nested deeper than ${config.MAX_JSON_DEPTH} levels`), { statusCode: 400, code: 'FST_ERR_CTP_INVALID_JSON_BODY' })
      done(error, undefined)
      return
    }
    parseJson(request, body as string, done)
  })
  // Off by default: behind a load balancer the node's own bound is the balancer's business.
  if (config.MAX_CONNECTIONS > 0) app.server.maxConnections = config.MAX_CONNECTIONS

  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (error instanceof StoreUnavailableError) {
      request.log.warn({ err: error }, 'event refused: store unavailable')
      return reply.code(503).header('retry-after', '1').send({
        statusCode: 503, code: error.code, error: 'Service Unavailable', message: error.message
      })
    }
    const statusCode = error.statusCode ?? 500
    if (statusCode >= 500) request.log.error({ err: error }, 'request failed')
    return reply.code(statusCode).send({
      statusCode,
      code: error.code,
      error: STATUS_CODES[statusCode] ?? 'Error',
      message: statusCode >= 500 ? 'internal error' : error.message
    })
  })

  await app.register(configPlugin, { config })
  await app.register(metricsPlugin)
  await app.register(storesPlugin)
  await app.register(authPlugin)
  await app.register(publisherPlugin)
  await app.register(idempotencyPlugin)
  await app.register(socketsPlugin)
  await app.register(websocket, {
    // The hub tracks every socket; ws's own client set would be a second entry per connection.
    options: { maxPayload: config.MAX_FRAME_BYTES, perMessageDeflate: false, clientTracking: false },
    // Our own goodbye (1012, via the hub plugin) instead of the plugin's default close.
    preClose: (done) => done()
  })
  await app.register(docsPlugin)
  await app.register(healthRoutes)
  await app.register(socketRoutes)
  await app.register(ingestRoutes)
  await app.register(batchRoutes)
  await app.register(presenceRoutes)
  await app.register(demoPlugin, options.demo ?? {})
  await app.ready()
  return app
}
