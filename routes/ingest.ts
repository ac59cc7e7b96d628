import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { Static, TSchema } from 'typebox'
import {
  AssignedChat, Chat, GlobalBody, HttpError, MessageBody, Ok, OperatorsBody, unroutableField, type PublishingRoute
} from '../src/protocol/protocol.js'
import type { RelayEvent } from '../src/protocol/routing.js'
import { IDEMPOTENCY_HEADER } from '../src/idempotency.js'

export const errors = { 400: HttpError, 401: HttpError, 413: HttpError, 415: HttpError, 503: HttpError }
export const security = [{ apiToken: [] }]

/** A 400 for what a body schema cannot say, in the shape of Fastify's own validation errors. */
export function invalidBody (message: string): Error {
  return Object.assign(new Error(message), { statusCode: 400, code: 'FST_ERR_VALIDATION' })
}

/** A publishing route: what it takes, what a valid body becomes, and its metrics label. */
export interface PublishingRouteSpec {
  summary: string
  body: TSchema
  /** The `source` label of relay_events_accepted_total / relay_events_rejected_total. */
  source: string
  /** The event of a body `body` accepted; throws invalidBody for what the schema cannot say. */
  toEvent: (body: unknown) => RelayEvent
}

function route<Body extends TSchema> (summary: string, body: Body, source: string, toEvent: (body: Static<Body>) => RelayEvent): PublishingRouteSpec {
  // Only ever called with a body its schema accepted: by Fastify here, by POST /batch with the same schema.
  return { summary, body, source, toEvent: (value) => toEvent(value as Static<Body>) }
}

/** Every publishing route, once: each is `POST <route>`, and an event of `POST /batch`. */
export const publishingRoutes: Record<PublishingRoute, PublishingRouteSpec> = {
  '/message': route('Publish a new, updated or deleted message to whoever its type reaches', MessageBody, 'message',
    ({ message, event = 'message_added' }) => {
      const missing = unroutableField(message)
      if (missing !== undefined) throw invalidBody(`body/message/${missing} is required for ${message.type} messages`)
      return { kind: 'message', event, message }
    }),
  '/update/chat': route('Publish chat_updated to the consoles whose sources admit the chat', Chat, 'update_chat',
    (chat) => ({ kind: 'chat_updated', chat })),
  '/update/operators': route('Publish operator_updated to every console', OperatorsBody, 'update_operators',
    (operators) => ({ kind: 'operator_updated', operators })),
  '/global': route('Publish global_updated (the body as data) to every console', GlobalBody, 'global',
    (data) => ({ kind: 'global_updated', data })),
  '/notifications/chat': route('Publish chat_notification to the consoles of operator chat.operator_user.id', AssignedChat, 'notification',
    (chat) => ({ kind: 'chat_notification', chat }))
}

/**
 * The options of a publishing route: its body schema, 200 `{ok: true}` once the bus took the event, and
 * `Idempotency-Key` (plugins/idempotency.ts).
 */
function publishing<Body extends TSchema> (summary: string, body: Body) {
  return { schema: { summary, body, response: { 200: Ok, ...errors }, security }, config: { idempotent: true } }
}

/** The Idempotency-Key header as Node names it: a request that carries one publishes at most once under it. */
export const IDEMPOTENCY_FIELD = IDEMPOTENCY_HEADER.toLowerCase()

/**
 * HTTP ingest for backends. Each route validates (schema), publishes through the core, and answers
 * 200 only after the bus accepted the event.
 */
const ingest: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.auth.requireApiToken)
  for (const [url, spec] of Object.entries(publishingRoutes) as Array<[PublishingRoute, PublishingRouteSpec]>) {
    app.post(url, publishing(spec.summary, spec.body), async (request) => {
      const key = request.headers[IDEMPOTENCY_FIELD]
      await app.publisher.publish(spec.toEvent(request.body), spec.source, typeof key === 'string' ? { once: `${url} ${key}` } : {})
      return { ok: true as const }
    })
  }
}

export default ingest
