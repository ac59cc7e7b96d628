import { readFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { FastifyReply } from 'fastify'
import { createSigner } from 'fast-jwt'
import fp from 'fastify-plugin'
import { Type } from 'typebox'
import { SocketAuthError, type Principal } from '../src/auth.js'
import {
  DEMO_TOKEN_TTL_MS, DemoChats, DemoNoteBody, DemoTokenAnswer, DemoTokenRequest, demoContentType, demoFile, demoGrant, demoNote, findUp
} from '../src/demo.js'
import { HttpError, OnlineUser } from '../src/protocol/protocol.js'

export interface DemoOptions {
  /** The demo pages (default: demo/ of the package). */
  pagesDir?: string
  /** The SDK's built ESM, served at /demo/sdk/ (default: client/dist/client/src/, what the build writes). */
  sdkDir?: string
}

function packageRoot (): string {
  return findUp(dirname(fileURLToPath(import.meta.url)), join('demo', 'widget.html')) ?? process.cwd()
}

function httpError (reply: FastifyReply, statusCode: 401 | 403 | 404, code: string, message: string): FastifyReply {
  const error = { 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found' }[statusCode]
  return reply.code(statusCode).send({ statusCode, code, error, message })
}

/**
 * DEMO=true (config refuses it in production): the widget and console pages at /demo/, the SDK they
 * import at /demo/sdk/, and what a backend would do for them: POST /demo/token (short-lived tokens for
 * anyone, signed with JWT_SECRET), POST /demo/note, GET /demo/chats, GET /demo/online-users (presence
 * without the Api-Token a browser must not hold). DEMO unset: nothing is registered (404).
 */
const demo: FastifyPluginAsyncTypebox<DemoOptions> = async (app, options) => {
  const { config } = app
  if (!config.DEMO) return
  const root = packageRoot()
  const pagesDir = options.pagesDir ?? join(root, 'demo')
  const sdkDir = options.sdkDir ?? join(root, 'client', 'dist', 'client', 'src')
  // JWT_PUBLIC_KEY is refused with DEMO by config: the key is the HS256 secret (configured or generated).
  const sign = createSigner({ key: config.jwtKey, algorithm: 'HS256', expiresIn: DEMO_TOKEN_TTL_MS })
  const chats = new DemoChats()
  app.log.warn({ pagesDir, sdkDir }, 'DEMO=true: /demo/ serves tokens to anyone who asks (development only)')
  const hide = true

  const sendFile = async (reply: FastifyReply, dir: string, path: string): Promise<FastifyReply> => {
    const file = demoFile(dir, path)
    const type = demoContentType(path)
    if (file === undefined || type === undefined) return httpError(reply, 404, 'NOT_FOUND', 'no such demo file')
    let body: Buffer
    try {
      body = await readFile(file)
    } catch {
      return httpError(reply, 404, 'NOT_FOUND', dir === sdkDir ? 'SDK not built: run npm run build' : 'no such demo file')
    }
    return reply.type(type).header('cache-control', 'no-cache').send(body)
  }

  app.get('/demo', { schema: { hide } }, async (_request, reply) => reply.redirect('/demo/'))
  app.get('/demo/', { schema: { hide } }, async (_request, reply) => await sendFile(reply, pagesDir, 'index.html'))
  // The wildcard's value (Fastify names it '*'), not validated by schema: demoFile checks every segment.
  const wildcard = (params: unknown): string => (params as { '*'?: string })['*'] ?? ''
  app.get('/demo/sdk/*', { schema: { hide } }, async (request, reply) => await sendFile(reply, sdkDir, wildcard(request.params)))
  app.get('/demo/*', { schema: { hide } }, async (request, reply) => await sendFile(reply, pagesDir, wildcard(request.params)))

  app.post('/demo/token', {
    schema: { hide, body: DemoTokenRequest, response: { 200: DemoTokenAnswer, 400: HttpError } }
  }, async (request) => {
    const grant = demoGrant(request.body)
    if (grant.announce !== undefined) {
      // What a backend does when a customer opens a chat: consoles learn it (and its widget) at once.
      await app.publisher.publish({ kind: 'chat_updated', chat: grant.announce }, 'demo')
      chats.remember(grant.announce)
    }
    const answer: DemoTokenAnswer = {
      token: sign(grant.claims),
      expires_at: new Date(Date.now() + DEMO_TOKEN_TTL_MS).toISOString(),
      user: grant.claims.user
    }
    if (grant.chat !== undefined) answer.chat = grant.chat
    return answer
  })

  app.post('/demo/note', {
    schema: { hide, body: DemoNoteBody, response: { 200: Type.Object({ ok: Type.Literal(true) }), 400: HttpError, 401: HttpError, 403: HttpError } }
  }, async (request, reply) => {
    const header = request.headers.authorization
    const bearer = typeof header === 'string' && header.startsWith('Bearer ') ? header.slice(7) : ''
    let principal: Principal
    try {
      principal = app.auth.verifyToken(bearer)
    } catch (error) {
      if (!(error instanceof SocketAuthError)) throw error
      return httpError(reply, 401, 'UNAUTHORIZED', 'a demo operator token for the chat is required')
    }
    if (principal.role !== 'operator' || principal.chatUuid === undefined) {
      return httpError(reply, 403, 'FORBIDDEN', 'notes are for operators in a chat')
    }
    const chat = chats.get(principal.chatUuid) ?? { uuid: principal.chatUuid }
    await app.publisher.publish(demoNote(chat, principal.user, request.body.text), 'demo', { numbered: true })
    return { ok: true as const }
  })

  // No response schema: a Chat names User twice, which the serializer compiler refuses as two schemas.
  app.get('/demo/chats', { schema: { hide } }, async () => chats.list())
  app.get('/demo/online-users', { schema: { hide, response: { 200: Type.Array(OnlineUser) } } }, async () => {
    return await app.stores.presence.onlineUsers()
  })
}

export default fp(demo, { name: 'demo', dependencies: ['config', 'auth', 'publisher', 'stores'] })
