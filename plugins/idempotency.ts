import type { FastifyReply, FastifyRequest, FastifySchema, RouteOptions } from 'fastify'
import fp from 'fastify-plugin'
import { Type } from 'typebox'
import { IDEMPOTENCY_HEADER, Idempotency, IdempotencyKey, type IdempotentRun } from '../src/idempotency.js'
import { HttpError } from '../src/protocol/protocol.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** A publishing route: a repeated `Idempotency-Key` is answered as the first request was, publishing nothing. */
    idempotent?: boolean
  }
}

type Hook = NonNullable<RouteOptions['preHandler']>
const asList = <T>(hooks: T | T[] | undefined): T[] => hooks === undefined ? [] : Array.isArray(hooks) ? hooks : [hooks]

/** Header names as Node hands them over: Fastify does not lowercase a schema for a custom validator compiler. */
const HEADER_FIELD = IDEMPOTENCY_HEADER.toLowerCase()

/** The optional header (validated by the route's own schema: 400 names it) and the 409/422 answers. */
function withIdempotencyKey (schema: FastifySchema | undefined): FastifySchema {
  const headers = (schema?.headers ?? Type.Object({})) as { properties?: Record<string, unknown> }
  const response = schema?.response as Record<string, unknown> | undefined
  return {
    ...schema,
    headers: { ...headers, type: 'object', properties: { ...headers.properties, [HEADER_FIELD]: IdempotencyKey } },
    ...(response === undefined ? {} : { response: { ...response, 409: HttpError, 422: HttpError } })
  }
}

function sendError (reply: FastifyReply, statusCode: 409 | 422, code: string, message: string): FastifyReply {
  return reply.code(statusCode).send({ statusCode, code, error: statusCode === 409 ? 'Conflict' : 'Unprocessable Entity', message })
}

/** The answer as sent, when it can be kept (JSON text); undefined for a stream or nothing. */
function answerText (payload: unknown): string | undefined {
  if (typeof payload === 'string') return payload
  return Buffer.isBuffer(payload) ? payload.toString() : undefined
}

/**
 * `Idempotency-Key` on every route whose options carry `config: { idempotent: true }`: a preHandler
 * claims the key (or replays the stored answer, or waits for a first request still running on any node)
 * and an onSend hook stores the route's final answer or releases the key after a 5xx. No header: no
 * store round trip. Register before the routes.
 */
export default fp(async (app) => {
  const { config, metrics } = app
  const idempotency = new Idempotency(app.stores.idempotency, {
    ttlMs: config.IDEMPOTENCY_TTL_S * 1000,
    // A claim outlives a first request's longest publish; its node renews it while the request runs.
    leaseMs: 2 * config.PUBLISH_TIMEOUT_MS,
    // A repeat waits out the first request's publish, slightly more, before answering 409.
    waitMs: config.PUBLISH_TIMEOUT_MS + 500
  }, metrics, app.log.child({ component: 'idempotency' }))
  const runs = new WeakMap<FastifyRequest, IdempotentRun>()

  const claimKey = async (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> => {
    const key = request.headers[HEADER_FIELD]
    if (typeof key !== 'string') return
    const route = request.routeOptions.url ?? ''
    const admission = await idempotency.admit(route, key, request.body)
    switch (admission.kind) {
      case 'run':
        runs.set(request, admission.run)
        return
      case 'replay':
        metrics.idempotentReplays.inc({ route })
        return reply.code(admission.answer.status).type('application/json; charset=utf-8')
          .header('idempotent-replayed', 'true').send(admission.answer.body)
      case 'mismatch':
        return sendError(reply, 422, 'IDEMPOTENCY_KEY_REUSED', `${IDEMPOTENCY_HEADER} was already used on this route with another body`)
      case 'in_progress':
        reply.header('retry-after', '1')
        return sendError(reply, 409, 'IDEMPOTENCY_IN_PROGRESS', `a request with this ${IDEMPOTENCY_HEADER} is still running: retry`)
      default: {
        const never: never = admission
        throw new Error(`unknown admission ${JSON.stringify(never)}`)
      }
    }
  }

  const storeAnswer = async (request: FastifyRequest, reply: FastifyReply, payload: unknown): Promise<unknown> => {
    const run = runs.get(request)
    if (run === undefined) return payload
    runs.delete(request)
    // A route that published only part of its work (a batch that stopped at a 503) is not stored: the
    // retry with the same key publishes the rest, each event at most once (Bus.append `once`).
    await run.finish(request.idempotentIncomplete ? 503 : reply.statusCode, answerText(payload))
    return payload
  }

  // Never left claimed: an answer that skipped onSend releases its key (an aborted request still runs
  // its handler and onSend, so abort itself releases nothing: the event may be published yet).
  const releaseUnanswered = async (request: FastifyRequest): Promise<void> => {
    const run = runs.get(request)
    if (run === undefined) return
    runs.delete(request)
    await run.finish(500, undefined)
  }

  // Callback hooks that return at once for a request without the header (nearly every one): no promise
  // per hook on the ingest path; the async work above runs only for a request that carries a key.
  const claimHook = (request: FastifyRequest, reply: FastifyReply, done: (error?: Error) => void): void => {
    if (typeof request.headers[HEADER_FIELD] !== 'string') return done()
    claimKey(request, reply).then((replied) => { if (replied === undefined) done() }, done)
  }
  const storeHook = (request: FastifyRequest, reply: FastifyReply, payload: unknown, done: (error: Error | null, payload?: unknown) => void): void => {
    if (!runs.has(request)) return done(null, payload)
    storeAnswer(request, reply, payload).then((kept) => done(null, kept), done)
  }
  const releaseHook = (request: FastifyRequest, _reply: FastifyReply, done: (error?: Error) => void): void => {
    if (!runs.has(request)) return done()
    releaseUnanswered(request).then(() => done(), done)
  }

  app.decorateRequest('idempotentIncomplete', false)
  app.addHook('onRoute', (route) => {
    if (route.config?.idempotent !== true) return
    route.schema = withIdempotencyKey(route.schema)
    route.preHandler = [...asList<Hook>(route.preHandler).flat(), claimHook] as Hook
    route.onSend = [...asList(route.onSend).flat(), storeHook] as RouteOptions['onSend']
    route.onResponse = [...asList(route.onResponse).flat(), releaseHook] as RouteOptions['onResponse']
  })
}, { name: 'idempotency', dependencies: ['config', 'metrics', 'stores'] })

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by a route that answered with part of its work not done: its Idempotency-Key is released, not stored. */
    idempotentIncomplete: boolean
  }
}
