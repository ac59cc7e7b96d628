import fp from 'fastify-plugin'
import { Publisher } from '../src/publisher.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The one way an event enters the bus (ingest routes and client events). */
    publisher: Publisher
  }
}

/** Standalone mode (no webhook) remembers messages, so marks can re-emit them. */
export default fp(async (app) => {
  const { config, metrics } = app
  app.decorate('publisher', new Publisher(app.stores.bus, app.stores.chatLog, metrics, {
    timeoutMs: config.PUBLISH_TIMEOUT_MS,
    rememberMessages: config.WEBHOOK_URL === undefined,
    onceTtlSeconds: config.IDEMPOTENCY_TTL_S,
    lanes: config.consoleLanes
  }))
}, { name: 'publisher', dependencies: ['config', 'metrics', 'stores'] })
