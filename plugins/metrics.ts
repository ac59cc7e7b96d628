import fp from 'fastify-plugin'
import { createMetrics, type Metrics } from '../src/metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: Metrics
  }
}

/** Prometheus metrics on a registry of this app's own, served at GET /metrics. */
export default fp(async (app) => {
  const metrics = createMetrics({ defaults: true })
  app.decorate('metrics', metrics)
  // Scraped every few seconds: not logged, and not an API (hidden from OpenAPI).
  app.get('/metrics', { logLevel: 'warn', schema: { hide: true } }, async (_request, reply) => {
    reply.type(metrics.registry.contentType)
    return await metrics.registry.metrics()
  })
}, { name: 'metrics', dependencies: ['config'] })
