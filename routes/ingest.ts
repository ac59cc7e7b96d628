import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import {
  AssignedChat, Chat, GlobalBody, HttpError, MessageBody, OnlineUser, Ok, OperatorsBody, unroutableField
} from '../src/protocol/protocol.js'

const errors = { 400: HttpError, 401: HttpError, 413: HttpError, 415: HttpError, 503: HttpError }
const security = [{ apiToken: [] }]

/**
 * HTTP ingest for backends. Each route validates (schema), publishes through the core, and answers
 * 200 only after the bus accepted the event.
 */
const ingest: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.auth.requireApiToken)

  app.post('/message', {
    schema: {
      summary: 'Publish a new or updated message to its chat room and consoles',
      body: MessageBody,
      response: { 200: Ok, ...errors },
      security
    }
  }, async (request) => {
    const { message, event = 'message_added' } = request.body
    const missing = unroutableField(message)
    if (missing !== undefined) {
      throw Object.assign(new Error(`body/message/${missing} is required for ${message.type} messages`), { statusCode: 400, code: 'FST_ERR_VALIDATION' })
    }
    await app.publisher.publish({ kind: 'message', event, message }, 'message')
    return { ok: true as const }
  })

  app.post('/update/chat', {
    schema: { summary: 'Publish chat_updated to the consoles whose sources admit the chat', body: Chat, response: { 200: Ok, ...errors }, security }
  }, async (request) => {
    await app.publisher.publish({ kind: 'chat_updated', chat: request.body }, 'update_chat')
    return { ok: true as const }
  })

  app.post('/update/operators', {
    schema: { summary: 'Publish operator_updated to every console', body: OperatorsBody, response: { 200: Ok, ...errors }, security }
  }, async (request) => {
    await app.publisher.publish({ kind: 'operator_updated', operators: request.body }, 'update_operators')
    return { ok: true as const }
  })

  app.post('/global', {
    schema: { summary: 'Publish global_updated (the body as data) to every console', body: GlobalBody, response: { 200: Ok, ...errors }, security }
  }, async (request) => {
    await app.publisher.publish({ kind: 'global_updated', data: request.body }, 'global')
    return { ok: true as const }
  })

  app.post('/notifications/chat', {
    schema: {
      summary: 'Publish chat_notification to the consoles of operator chat.operator_user.id',
      body: AssignedChat,
      response: { 200: Ok, ...errors },
      security
    }
  }, async (request) => {
    await app.publisher.publish({ kind: 'chat_notification', chat: request.body }, 'notification')
    return { ok: true as const }
  })

  const onlineUsers = {
    schema: { summary: 'Operators with an open console, over every relay node', response: { 200: Type.Array(OnlineUser), 401: HttpError, 503: HttpError }, security }
  }
  const answerOnlineUsers = async () => await app.stores.presence.onlineUsers()
  app.get('/online-users', onlineUsers, answerOnlineUsers)
  app.post('/online-users', onlineUsers, answerOnlineUsers)
}

export default ingest
