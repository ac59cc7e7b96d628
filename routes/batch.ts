import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Compile } from 'typebox/compile'
import { BatchBody, BatchResults, type PublishingRoute } from '../src/protocol/protocol.js'
import type { RelayEvent } from '../src/protocol/routing.js'
import { StoreUnavailableError } from '../src/stores/store-errors.js'
import { errors, IDEMPOTENCY_FIELD, publishingRoutes, security, type PublishingRouteSpec } from './ingest.js'

interface Refusal { status: number, error: string }
type BatchResult = { ok: true } | Refusal

/** Each route's body schema, compiled once, as Fastify's TypeBox validator compiles it for the route itself. */
const validators = Object.fromEntries(Object.entries(publishingRoutes)
  .map(([url, spec]: [string, PublishingRouteSpec]) => [url, Compile(spec.body)])) as Record<PublishingRoute, ReturnType<typeof Compile>>

/**
 * The event of one batch entry, or the answer its route would have given it: Fastify's 400 message for
 * the schema (`body/<path> <problem>`, joined like its default formatter), then the route's own checks.
 */
function prepare (route: PublishingRoute, body: unknown): { event: RelayEvent } | { refused: Refusal } {
  const validator = validators[route]
  if (!validator.Check(body)) {
    return { refused: { status: 400, error: validator.Errors(body).map((problem) => `body${problem.instancePath} ${problem.message}`).join(', ') } }
  }
  try {
    return { event: publishingRoutes[route].toEvent(body) }
  } catch (error) {
    const status = (error as { statusCode?: unknown }).statusCode
    if (status !== 400) throw error
    return { refused: { status, error: (error as Error).message } }
  }
}

/**
 * POST /batch: up to 100 events of the publishing routes. Each is validated like its route and answered
 * on its own (an invalid one does not stop the others); valid ones are published one after the other,
 * so receivers see them in batch order. A publish that fails stops the batch there: that event and
 * every later one answer 503, so the results say exactly which events were published.
 */
const batch: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.auth.requireApiToken)

  app.post('/batch', {
    // One Idempotency-Key covers the whole batch: a retry is answered as the first one was.
    config: { idempotent: true },
    schema: {
      summary: 'Publish up to 100 events of the publishing routes, in order, each answered on its own',
      body: BatchBody,
      response: { 200: BatchResults, ...errors },
      security
    }
  }, async (request) => {
    const results: BatchResult[] = []
    const key = request.headers[IDEMPOTENCY_FIELD]
    let stopped: string | undefined
    for (const [index, { route, body }] of request.body.events.entries()) {
      if (stopped !== undefined) {
        results.push({ status: 503, error: stopped })
        continue
      }
      const prepared = prepare(route, body)
      if ('refused' in prepared) {
        results.push(prepared.refused)
        continue
      }
      try {
        await app.publisher.publish(prepared.event, publishingRoutes[route].source, typeof key === 'string' ? { once: `/batch ${key} ${index}` } : {})
        results.push({ ok: true })
      } catch (error) {
        if (error instanceof StoreUnavailableError) {
          request.log.warn({ err: error, event: index }, 'batch stopped: store unavailable')
          results.push({ status: 503, error: error.message })
        } else {
          request.log.error({ err: error, event: index }, 'batch stopped: publishing failed')
          results.push({ status: 500, error: 'internal error' })
        }
        stopped = `not published: event ${index} of the batch failed`
        request.idempotentIncomplete = true
      }
    }
    return { results }
  })
}

export default batch
