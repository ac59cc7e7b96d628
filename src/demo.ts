import { randomInt, randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import { extname, join, resolve, sep } from 'node:path'
import { Type, type Static } from 'typebox'
import { isoWithOffset } from './client-events.js'
import type { Chat, Message, User } from './protocol/protocol.js'
import type { RelayEvent } from './protocol/routing.js'

/**
 * The demo (DEMO=true, never in production): what a support backend would do for the demo pages, kept
 * apart from the relay proper. Tokens for anyone who asks, chats announced when a widget opens one,
 * notes posted by the console. No Fastify here: plugins/demo.ts serves it.
 */

/** Demo tokens live this long; the SDK asks for a new one when a socket is refused with 4401. */
export const DEMO_TOKEN_TTL_MS = 10 * 60_000
/** Chats the demo remembers for a console that opens late (oldest go first). */
export const DEMO_CHATS_MAX = 200

const WidgetSource = Type.String({ pattern: '^[A-Za-z0-9_-]{1,32}$' })

export const DemoTokenRequest = Type.Object({
  role: Type.Enum(['user', 'operator']),
  /** The user id (digits); unset: a random one. */
  sub: Type.Optional(Type.String({ pattern: '^[1-9][0-9]{0,8}$' })),
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 40 })),
  /** The chat claim: required by /chat sockets; unset for a user: a new chat. */
  chat: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9-]{1,64}$' })),
  /** A customer opening a chat on this widget: the chat is announced to the consoles (chat_updated). */
  widget: Type.Optional(WidgetSource),
  sources: Type.Optional(Type.Object({
    widgets: Type.Optional(Type.Array(WidgetSource, { maxItems: 20 })),
    departments: Type.Optional(Type.Array(Type.Union([Type.String({ maxLength: 40 }), Type.Integer()]), { maxItems: 20 }))
  }, { additionalProperties: false }))
}, { additionalProperties: false })
export type DemoTokenRequest = Static<typeof DemoTokenRequest>

export const DemoTokenAnswer = Type.Object({
  token: Type.String(),
  expires_at: Type.String(),
  chat: Type.Optional(Type.String()),
  user: Type.Object({ id: Type.Integer(), role: Type.String(), firstname: Type.String() })
})
export type DemoTokenAnswer = Static<typeof DemoTokenAnswer>

export const DemoNoteBody = Type.Object({ text: Type.String({ minLength: 1, maxLength: 2000 }) }, { additionalProperties: false })

/** What a token request becomes: the claims to sign (exp added by the signer) and the chat to announce. */
export interface DemoGrant {
  claims: Record<string, unknown> & { sub: string, role: string, user: DemoTokenAnswer['user'] }
  chat?: string
  /** A chat opened on a widget: announce it with chat_updated. */
  announce?: Chat
}

export function demoGrant (request: DemoTokenRequest): DemoGrant {
  const sub = request.sub ?? String(randomInt(1000, 1_000_000))
  const label = request.role === 'user' ? 'Customer' : 'Operator'
  const user = { id: Number(sub), role: request.role, firstname: request.name ?? `${label} ${sub}` }
  const claims: DemoGrant['claims'] = { sub, role: request.role, user }
  const chat = request.chat ?? (request.role === 'user' ? randomUUID() : undefined)
  if (chat !== undefined) claims.chat = chat
  if (request.role === 'operator' && request.sources !== undefined) claims.sources = request.sources
  const grant: DemoGrant = { claims }
  if (chat !== undefined) grant.chat = chat
  if (request.role === 'user' && request.widget !== undefined && chat !== undefined) {
    grant.announce = { uuid: chat, widget: { source: request.widget }, status: 'new', owner_user: user, operator_user: null }
  }
  return grant
}

/** A note by an operator in a chat (numbered by the relay when published, like a relay-made message). */
export function demoNote (chat: Chat, user: User, text: string): RelayEvent {
  const message: Message = {
    id: 0,
    type: 'note',
    type_role: 'operator',
    status: 'new',
    text,
    send_time: isoWithOffset(),
    message_index: 0,
    chat,
    user,
    attachments: []
  }
  return { kind: 'message', event: 'message_added', message }
}

/** The chats customers opened through the demo, newest last, bounded. */
export class DemoChats {
  readonly #chats = new Map<string, Chat>()

  remember (chat: Chat): void {
    this.#chats.delete(chat.uuid)
    this.#chats.set(chat.uuid, chat)
    while (this.#chats.size > DEMO_CHATS_MAX) {
      const oldest = this.#chats.keys().next().value
      if (oldest === undefined) break
      this.#chats.delete(oldest)
    }
  }

  get (uuid: string): Chat | undefined {
    return this.#chats.get(uuid)
  }

  list (): Chat[] {
    return [...this.#chats.values()]
  }
}

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml'
}

/** The content type of a file the demo serves; undefined for any other kind of file. */
export function demoContentType (path: string): string | undefined {
  return CONTENT_TYPES[extname(path)]
}

/**
 * The file under `root` a URL path names, or undefined: only plain segments (letters, digits, `._-`, no
 * dot first) of a served file type, so no request reaches outside `root`.
 */
export function demoFile (root: string, urlPath: string): string | undefined {
  const segments = urlPath.split('/')
  if (segments.length > 8 || !segments.every((segment) => /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$/.test(segment))) return undefined
  if (demoContentType(urlPath) === undefined) return undefined
  const base = resolve(root)
  const file = resolve(base, ...segments)
  return file.startsWith(base + sep) ? file : undefined
}

/** The first directory from `start` upwards that holds `marker` (the package root, from src/ or dist/src/). */
export function findUp (start: string, marker: string): string | undefined {
  let directory = resolve(start)
  for (;;) {
    if (existsSync(join(directory, marker))) return directory
    const parent = resolve(directory, '..')
    if (parent === directory) return undefined
    directory = parent
  }
}
