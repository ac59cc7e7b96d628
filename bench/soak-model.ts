import { consoleSources, DEPARTMENTS, WIDGETS } from './workload.js'

/**
 * The soak's world (chats, consoles, who sits where) and SPEC.md's routing table restated for it,
 * independently of src/routing.ts: for each event the soak caused, the key a given socket must
 * receive, and the key of each frame a socket did receive. Equal keys match; a socket's balance of
 * expected minus received keys is what it lost (positive) or got without reason (negative).
 */

export type MessageType = 'standard' | 'bot' | 'system' | 'note'
export type Role = 'user' | 'operator'

// The benchmark's widgets, departments and console sources: the soak's consoles look like (e)'s.
export { DEPARTMENTS, WIDGETS }

export interface ChatDef {
  uuid: string
  widget: string
  department: number
  customerId: number
  /** The assigned operator (`operator_user`), who also owns console `operatorId`. */
  operatorId: number
  /** A second operator in the room (a supervisor), in some chats. */
  supervisorId?: number
}

export interface ConsoleDef {
  operatorId: number
  widgets?: string[]
  departments?: number[]
}

/** What routing reads of a socket. */
export type Member =
  | { endpoint: 'chat', chat: ChatDef, role: Role, userId: number }
  | ({ endpoint: 'broadcast' } & ConsoleDef)

export type SoakEvent =
  | { kind: 'message', event: 'message_added' | 'message_updated', chat: ChatDef, type: MessageType, typeRole: Role, tag: string, status: string }
  | { kind: 'message_deleted', chat: ChatDef, id: number, type: MessageType, typeRole: Role }
  | { kind: 'chat_updated', chat: ChatDef, n: number }
  | { kind: 'operator_updated', n: number }
  | { kind: 'global_updated', n: number }
  | { kind: 'chat_notification', chat: ChatDef, n: number }
  | { kind: 'typing', chat: ChatDef, role: Role, userId: number, tag?: string, stopped: boolean }
  | { kind: 'presence', event: 'user_connected' | 'user_disconnected', chat: ChatDef, role: Role, userId: number }
  | { kind: 'customer_presence', chat: ChatDef, userId: number, online: boolean }

export interface World {
  chats: ChatDef[]
  consoles: ConsoleDef[]
  /** A room of big notes: a fast operator reads it, slow consumers stop reading it. */
  heavy: ChatDef
}

export function consoleDef (operatorId: number, pattern: number): ConsoleDef {
  return { operatorId, ...consoleSources(pattern) }
}

export function buildWorld (chats: number, consoles: number): World {
  const half = Math.max(1, Math.floor(consoles / 2))
  return {
    chats: Array.from({ length: chats }, (_, index): ChatDef => ({
      uuid: `soak-chat-${index}`,
      widget: WIDGETS[index % WIDGETS.length] as string,
      department: (index % DEPARTMENTS) + 1,
      customerId: 200_000 + index,
      operatorId: 1 + (index % consoles),
      ...(index % 5 === 2 && consoles > 1 ? { supervisorId: 1 + ((index + half) % consoles) } : {})
    })),
    consoles: Array.from({ length: consoles }, (_, index) => consoleDef(index + 1, index)),
    heavy: { uuid: 'soak-heavy', widget: 'lk', department: 1, customerId: 299_999, operatorId: 8000 }
  }
}

export function admitsChat (console: ConsoleDef, chat: ChatDef): boolean {
  if (console.widgets !== undefined && !console.widgets.includes(chat.widget)) return false
  if (console.departments !== undefined && !console.departments.includes(chat.department)) return false
  return true
}

function messageReaches (member: Member, chat: ChatDef, type: MessageType, typeRole: Role): boolean {
  const broadcastable = type === 'standard' || type === 'bot'
  if (member.endpoint === 'broadcast') return broadcastable && admitsChat(member, chat)
  if (member.chat.uuid !== chat.uuid) return false
  if (broadcastable) return true
  if (type === 'note') return member.role === 'operator'
  return member.role === typeRole
}

/** SPEC Routing: the key `member` must receive for `event`, or undefined when it must not receive it. */
export function expectedKey (event: SoakEvent, member: Member): string | undefined {
  switch (event.kind) {
    case 'message':
      return messageReaches(member, event.chat, event.type, event.typeRole) ? `${event.event}:${event.tag}:${event.status}` : undefined
    case 'message_deleted':
      return messageReaches(member, event.chat, event.type, event.typeRole) ? `message_deleted:${event.chat.uuid}:${event.id}` : undefined
    case 'chat_updated':
      return member.endpoint === 'broadcast' && admitsChat(member, event.chat) ? `chat_updated:${event.n}` : undefined
    case 'operator_updated':
    case 'global_updated':
      return member.endpoint === 'broadcast' ? `${event.kind}:${event.n}` : undefined
    case 'chat_notification':
      return member.endpoint === 'broadcast' && member.operatorId === event.chat.operatorId ? `chat_notification:${event.n}` : undefined
    case 'typing':
      return typingKey(event, member)
    case 'presence': {
      if (member.endpoint !== 'chat' || member.chat.uuid !== event.chat.uuid) return undefined
      if (member.role === event.role && member.userId === event.userId) return undefined
      return `${event.event}:${event.chat.uuid}:${event.role}:${event.userId}`
    }
    case 'customer_presence':
      return member.endpoint === 'broadcast' && admitsChat(member, event.chat)
        ? `customer_presence:${event.chat.uuid}:${event.userId}:${String(event.online)}`
        : undefined
    default: {
      const unknownEvent: never = event
      throw new Error(`unknown soak event ${JSON.stringify(unknownEvent)}`)
    }
  }
}

/**
 * A customer's typing reaches the room's operators and the consoles admitting the chat, with text; an
 * operator's reaches the room's customers without text and its other operators with text. Nobody gets
 * their own typing back.
 */
function typingKey (event: Extract<SoakEvent, { kind: 'typing' }>, member: Member): string | undefined {
  const key = (withText: boolean): string =>
    `typing_updated:${event.chat.uuid}:${event.role}:${event.userId}:${withText ? event.tag ?? '-' : '-'}:${String(event.stopped)}`
  if (member.endpoint === 'broadcast') return event.role === 'user' && admitsChat(member, event.chat) ? key(true) : undefined
  if (member.chat.uuid !== event.chat.uuid) return undefined
  if (member.role === event.role && member.userId === event.userId) return undefined
  if (member.role === 'operator') return key(true)
  return event.role === 'operator' ? key(false) : undefined
}

type Json = Record<string, unknown>
const object = (value: unknown): Json => typeof value === 'object' && value !== null ? value as Json : {}
const text = (value: unknown): string => typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean' ? String(value) : '?'
/** The tag a soak text starts with (`p12 filler...` → `p12`). */
const tagOf = (value: unknown): string => typeof value === 'string' ? value.split(' ', 1)[0] as string : '?'

/** The key of a received frame (the same form as expectedKey), or undefined for frames the soak does not count. */
export function frameKey (frame: Json): string | undefined {
  const type = text(frame.type)
  const data = object(frame.data)
  switch (type) {
    case 'connected':
    case 'pong':
      return undefined
    case 'message_added':
    case 'message_updated': {
      const message = object(data.message)
      return `${type}:${tagOf(message.text)}:${text(message.status)}`
    }
    case 'message_deleted': {
      const message = object(data.message)
      return `${type}:${text(object(message.chat).uuid)}:${text(message.id)}`
    }
    case 'chat_updated':
    case 'chat_notification':
      return `${type}:${text(object(data.chat).soak_seq)}`
    case 'operator_updated':
      return `${type}:${text(object(Array.isArray(data.operators) ? data.operators[0] : undefined).soak_seq)}`
    case 'global_updated':
      return `${type}:${text(data.soak_seq)}`
    case 'typing_updated': {
      const user = object(data.user)
      const tag = 'text' in data ? tagOf(data.text) : '-'
      return `${type}:${text(object(data.chat).uuid)}:${text(user.role)}:${text(user.id)}:${tag}:${text(data.stopped)}`
    }
    case 'user_connected':
    case 'user_disconnected': {
      const user = object(data.user)
      return `${type}:${text(object(data.chat).uuid)}:${text(user.role)}:${text(user.id)}`
    }
    case 'customer_presence':
      return `${type}:${text(object(data.chat).uuid)}:${text(object(data.user).id)}:${text(data.online)}`
    default:
      return `unexpected ${type}`
  }
}

const PERSON = { firstname: 'Soak', lastname: 'Test', patronymic: null, avatar: null }
const FILLER = 'Hello, I would like to know the status of my order and when it ships. The tracking page says it left ' +
  'the warehouse two days ago but nothing has moved since. Could you check it for me, please? Thank you very much. '

/** `tag` then filler, `bytes` long in all (ASCII). */
export function soakText (tag: string, bytes: number): string {
  let body = `${tag} `
  while (body.length < bytes) body += FILLER
  return body.slice(0, Math.max(bytes, tag.length))
}

export function chatBody (chat: ChatDef, extra: Json = {}): Json {
  return {
    uuid: chat.uuid,
    widget: { source: chat.widget },
    status: 'new',
    owner_user: { id: chat.customerId, role: 'user', ...PERSON },
    operator_user: { id: chat.operatorId, role: 'operator', ...PERSON },
    department: { id: chat.department },
    ...extra
  }
}

export interface PostedMessage {
  id: number
  chat: ChatDef
  type: MessageType
  typeRole: Role
  text: string
  status: string
}

export function messageBody (message: PostedMessage, event: 'message_added' | 'message_updated' | 'message_deleted'): Json {
  const { chat } = message
  const author = message.typeRole === 'user'
    ? { id: chat.customerId, role: 'user', ...PERSON }
    : { id: chat.operatorId, role: 'operator', ...PERSON }
  return {
    message: {
      id: message.id,
      type: message.type,
      type_role: message.typeRole,
      status: message.status,
      text: message.text,
      send_time: '2026-11-23T10:00:00+03:00',
      message_index: message.id,
      chat: chatBody(chat),
      user: message.type === 'bot' ? null : author,
      attachments: []
    },
    ...(event === 'message_added' ? {} : { event })
  }
}
