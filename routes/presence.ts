import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { ChatCustomers, CustomersOnlineBody, HttpError, OnlineUser } from '../src/protocol/protocol.js'

const security = [{ apiToken: [] }]

/**
 * Who is connected, over every relay node, for a backend to hand to its consoles: operators with a
 * console (/online-users) and the customers in given chats (/customers/online). Read-only; 503 while
 * presence storage is away.
 */
const presence: FastifyPluginAsyncTypebox = async (app) => {
  app.addHook('onRequest', app.auth.requireApiToken)

  const onlineUsers = {
    schema: { summary: 'Operators with an open console, over every relay node', response: { 200: Type.Array(OnlineUser), 401: HttpError, 503: HttpError }, security }
  }
  const answerOnlineUsers = async () => await app.stores.presence.onlineUsers()
  app.get('/online-users', onlineUsers, answerOnlineUsers)
  app.post('/online-users', onlineUsers, answerOnlineUsers)

  app.post('/customers/online', {
    schema: {
      summary: 'The customers holding a socket in each chat, over every relay node (one entry per chat asked, in order)',
      body: CustomersOnlineBody,
      response: { 200: Type.Array(ChatCustomers), 400: HttpError, 401: HttpError, 413: HttpError, 415: HttpError, 503: HttpError },
      security
    }
  }, async (request) => await app.stores.presence.customersOnline(request.body.chats))
}

export default presence
