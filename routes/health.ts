import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'

const Status = Type.Object({ status: Type.String(), bus: Type.Optional(Type.String()) })

/**
 * Liveness (the process answers) and readiness (the bus is connected and we are not draining). Probes
 * come every few seconds: their requests are not logged (logLevel warn).
 */
const health: FastifyPluginAsyncTypebox = async (app) => {
  app.get('/health', { logLevel: 'warn', schema: { summary: 'Process is alive', response: { 200: Status } } }, async () => ({ status: 'ok' }))

  app.get('/ready', {
    logLevel: 'warn',
    schema: { summary: 'Bus connected and not draining', response: { 200: Status, 503: Status } }
  }, async (_request, reply) => {
    if (app.sockets.draining) return await reply.code(503).send({ status: 'draining', bus: app.stores.bus.kind })
    if (!app.stores.bus.isReady()) return await reply.code(503).header('retry-after', '1').send({ status: 'bus_down', bus: app.stores.bus.kind })
    return { status: 'ready', bus: app.stores.bus.kind }
  })
}

export default health
