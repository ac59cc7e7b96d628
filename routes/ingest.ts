import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type, type TSchema } from 'typebox'
import {
  AssignedChat, Chat, GlobalBody, HttpError, MessageBody, OnlineUser, Ok, OperatorsBody, unroutableField
} from '../src/protocol/protocol.js'
import type { RelayEvent } from '../src/protocol/routing.js'

const errors = { 400: HttpError, 401: HttpError, 413: HttpError, 415: HttpError, 503: HttpError }
const security = [{ apiToken: [] }]

/** The options of a publishing route: its body schema, and 200 `{ok: true}` once the bus took the event. */
function publishing<Body extends TSchema> (summary: string, body: Body) {
  return { schema: { summary, body, response: { 200: Ok, ...errors }, security } }
}

/**
 * HTTP ingest for backends. Each route validates (schema), publishes through the core, and answers
 * 200 only after the bus accepted the event.
 */
const ingest: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.auth.requireApiToken)
  const published = async (event: RelayEvent, source: string): Promise<{ ok: true }> => {
    await app.publisher.publish(event, source)
    return { ok: true }
  }

  app.post('/message', publishing('Publish a new or updated message to its chat room and consoles', MessageBody), async (request) => {
    const { message, event = 'message_added' } = request.body
    const missing = unroutableField(message)
    if (missing !== undefined) {
      throw Object.assign(new Error(`body/message/${missing} is required for ${message.type} messages`), { statusCode: 400, code: 'FST_ERR_VALIDATION' })
    }
    return await published({ kind: 'message', event, message }, 'message')
  })

  app.post('/update/chat', publishing('Publish chat_updated to the consoles whose sources admit the chat', Chat),
    async (request) => await published({ kind: 'chat_updated', chat: request.body }, 'update_chat'))

  app.post('/update/operators', publishing('Publish operator_updated to every console', OperatorsBody),
    async (request) => await published({ kind: 'operator_updated', operators: request.body }, 'update_operators'))

  app.post('/global', publishing('Publish global_updated (the body as data) to every console', GlobalBody),
    async (request) => await published({ kind: 'global_updated', data: request.body }, 'global'))

  app.post('/notifications/chat', publishing('Publish chat_notification to the consoles of operator chat.operator_user.id', AssignedChat),
    async (request) => await published({ kind: 'chat_notification', chat: request.body }, 'notification'))

  const onlineUsers = {
    schema: { summary: 'Operators with an open console, over every relay node', response: { 200: Type.Array(OnlineUser), 401: HttpError, 503: HttpError }, security }
  }
  const answerOnlineUsers = async () => await app.stores.presence.onlineUsers()
  app.get('/online-users', onlineUsers, answerOnlineUsers)
  app.post('/online-users', onlineUsers, answerOnlineUsers)
}

export default ingest
