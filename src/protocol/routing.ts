import type { AssignedChat, Chat, Message, Operator, ServerFrame, User } from './protocol.js'

/**
 * The routing table of SPEC.md as pure functions: an event becomes deliveries (who, which frame), and a
 * socket's attributes say whether an audience includes it. No I/O, no Fastify.
 */

export interface SourcesFilter {
  widgets?: ReadonlySet<string>
  departments?: ReadonlySet<string>
}

export interface SocketAttributes {
  endpoint: 'chat' | 'broadcast'
  role: string
  userId: string
  /** `role:userId`: presence and "not to the user itself" key on this. */
  userKey: string
  chatUuid?: string
  sources?: SourcesFilter
}

/**
 * Where a chat sits for `/broadcast` source filtering; absent fields filter nothing. `unknown`: the relay
 * has never been told (SPEC Routing), so only consoles without sources may see the chat.
 */
export interface ChatScope {
  uuid: string
  widget?: string
  department?: string
  unknown?: true
}

export type Audience =
  /** sockets in one chat room, optionally only one role and never the sockets of one user */
  | { scope: 'chat', chat: string, role?: string, exceptUser?: string }
  /** `/broadcast` sessions whose sources admit a chat */
  | { scope: 'sources', chat: ChatScope }
  /** every `/broadcast` session */
  | { scope: 'broadcast' }
  /** the `/broadcast` sessions of one operator */
  | { scope: 'operator', operatorId: string }

export interface Delivery {
  audience: Audience
  frame: ServerFrame
}

/** A deletion routes exactly as the deleted message did, carrying only its id and chat. */
export type MessageEventType = 'message_added' | 'message_updated' | 'message_deleted'

export type RelayEvent =
  /** `scope`, when given, replaces the message's own chat for console routing (a message the relay made). */
  | { kind: 'message', event: MessageEventType, message: Message, scope?: ChatScope }
  | { kind: 'chat_updated', chat: Chat }
  | { kind: 'operator_updated', operators: Operator[] }
  | { kind: 'global_updated', data: Record<string, unknown> }
  | { kind: 'chat_notification', chat: AssignedChat }
  | { kind: 'typing', chat: ChatScope, user: User, senderRole: string, senderKey: string, text?: string, stopped: boolean }
  | { kind: 'presence', event: 'user_connected' | 'user_disconnected', chatUuid: string, user: User, userKey: string }
  /** A customer's first socket in a chat opened (online) or its last closed, for the consoles that see the chat. */
  | { kind: 'customer_presence', chat: ChatScope, user: User, online: boolean }

export const Role = { customer: 'user', operator: 'operator' } as const

export function idString (id: string | number): string {
  return typeof id === 'number' ? String(id) : id
}

export function chatScope (chat: Chat): ChatScope {
  const scope: ChatScope = { uuid: chat.uuid }
  const widget = chat.widget?.source
  if (typeof widget === 'string') scope.widget = widget
  const department = chat.department?.id
  if (department !== undefined) scope.department = idString(department)
  return scope
}

function messageFrame (event: MessageEventType, message: Message): ServerFrame {
  if (event === 'message_deleted') return { type: event, data: { message: { id: message.id, chat: { uuid: message.chat.uuid } } } }
  return { type: event, data: { message } }
}

function messageDeliveries (event: MessageEventType, message: Message, scope = chatScope(message.chat)): Delivery[] {
  const frame = messageFrame(event, message)
  const chat = message.chat.uuid
  switch (message.type) {
    case 'standard':
    case 'bot':
      return [
        { audience: { scope: 'chat', chat }, frame },
        { audience: { scope: 'sources', chat: scope }, frame }
      ]
    case 'system': {
      const role = message.type_role
      if (typeof role !== 'string' || role === '') return []
      return [{ audience: { scope: 'chat', chat, role }, frame }]
    }
    case 'note':
      return [{ audience: { scope: 'chat', chat, role: Role.operator }, frame }]
    default: {
      const unknownType: never = message.type
      throw new Error(`unrouted message type ${String(unknownType)}`)
    }
  }
}

function typingDeliveries (event: Extract<RelayEvent, { kind: 'typing' }>): Delivery[] {
  const chatRef = { uuid: event.chat.uuid }
  const withText: ServerFrame = {
    type: 'typing_updated',
    data: event.text === undefined
      ? { chat: chatRef, user: event.user, stopped: event.stopped }
      : { chat: chatRef, user: event.user, text: event.text, stopped: event.stopped }
  }
  const toOperatorsInRoom: Delivery = {
    audience: { scope: 'chat', chat: event.chat.uuid, role: Role.operator, exceptUser: event.senderKey },
    frame: withText
  }
  if (event.senderRole === Role.customer) {
    return [toOperatorsInRoom, { audience: { scope: 'sources', chat: event.chat }, frame: withText }]
  }
  const withoutText: ServerFrame = {
    type: 'typing_updated',
    data: { chat: chatRef, user: event.user, stopped: event.stopped }
  }
  return [
    { audience: { scope: 'chat', chat: event.chat.uuid, role: Role.customer }, frame: withoutText },
    toOperatorsInRoom
  ]
}

/** Turns one accepted event into the deliveries of the routing table. */
export function planDeliveries (event: RelayEvent): Delivery[] {
  switch (event.kind) {
    case 'message':
      return messageDeliveries(event.event, event.message, event.scope)
    case 'chat_updated':
      return [{ audience: { scope: 'sources', chat: chatScope(event.chat) }, frame: { type: 'chat_updated', data: { chat: event.chat } } }]
    case 'operator_updated':
      return [{ audience: { scope: 'broadcast' }, frame: { type: 'operator_updated', data: { operators: event.operators } } }]
    case 'global_updated':
      return [{ audience: { scope: 'broadcast' }, frame: { type: 'global_updated', data: event.data } }]
    case 'chat_notification':
      return [{
        audience: { scope: 'operator', operatorId: idString(event.chat.operator_user.id) },
        frame: { type: 'chat_notification', data: { chat: event.chat } }
      }]
    case 'typing':
      return typingDeliveries(event)
    case 'presence':
      return [{
        audience: { scope: 'chat', chat: event.chatUuid, exceptUser: event.userKey },
        frame: { type: event.event, data: { chat: { uuid: event.chatUuid }, user: event.user } }
      }]
    case 'customer_presence':
      return [{
        audience: { scope: 'sources', chat: event.chat },
        frame: { type: 'customer_presence', data: { chat: { uuid: event.chat.uuid }, user: event.user, online: event.online } }
      }]
    default: {
      const unknownEvent: never = event
      throw new Error(`unrouted event ${JSON.stringify(unknownEvent)}`)
    }
  }
}

/** Whether a `/chat` socket is one the routing table sends this message to (what it may mark). */
export function chatSocketReceives (message: Message, socket: SocketAttributes): boolean {
  return messageDeliveries('message_updated', message).some(({ audience }) => audience.scope === 'chat' && admits(audience, socket))
}

/** Whether a `/broadcast` session's sources admit a chat (a missing side filters nothing). */
export function sourcesAdmit (sources: SourcesFilter | undefined, chat: ChatScope): boolean {
  if (sources === undefined) return true
  if (chat.unknown === true) return false
  if (sources.widgets !== undefined && chat.widget !== undefined && !sources.widgets.has(chat.widget)) return false
  if (sources.departments !== undefined && chat.department !== undefined && !sources.departments.has(chat.department)) return false
  return true
}

/** Whether an audience includes a socket. The hub narrows candidates by index first; this decides. */
export function admits (audience: Audience, socket: SocketAttributes): boolean {
  switch (audience.scope) {
    case 'chat':
      return socket.endpoint === 'chat' &&
        socket.chatUuid === audience.chat &&
        (audience.role === undefined || socket.role === audience.role) &&
        socket.userKey !== audience.exceptUser
    case 'sources':
      return socket.endpoint === 'broadcast' && sourcesAdmit(socket.sources, audience.chat)
    case 'broadcast':
      return socket.endpoint === 'broadcast'
    case 'operator':
      return socket.endpoint === 'broadcast' && socket.userId === audience.operatorId
    default: {
      const unknownAudience: never = audience
      throw new Error(`unknown audience ${JSON.stringify(unknownAudience)}`)
    }
  }
}

/**
 * Bus topics. A node subscribes only to what its own sockets can receive: the chat rooms it holds, the
 * operators it holds consoles of, the widgets its filtered consoles admit, and `anyWidget` only while it
 * holds a console without a widget filter.
 */
export const Topic = {
  chat: (chatUuid: string): string => `chat:${chatUuid}`,
  operator: (operatorId: string): string => `operator:${operatorId}`,
  /** every console: operator and global updates, and chats that name no widget */
  consoles: 'consoles',
  /** consoles whose sources list this widget */
  widget: (widget: string): string => `widget:${widget}`,
  /** consoles without a widget filter: they see every widget */
  anyWidget: 'any-widget'
} as const

/**
 * Console lanes. Every widget message goes to a console topic (its widget's and any-widget, or
 * consoles): on a Redis Cluster one such stream would put all console traffic on one shard. With
 * `lanes` > 1 each is split into that many streams, `<topic>/<k>`, a chat always on the same lane (its
 * events stay in one stream, in order), and a console reads every lane. One lane keeps the plain name.
 */
export function laned (topic: string, lane: number, lanes: number): string {
  return lanes <= 1 ? topic : `${topic}/${lane}`
}

/** Every lane of a console topic. */
export function lanesOf (topic: string, lanes: number): string[] {
  return lanes <= 1 ? [topic] : Array.from({ length: lanes }, (_, lane) => `${topic}/${lane}`)
}

/** A chat's lane: FNV-1a of its uuid. */
export function laneOf (chatUuid: string, lanes: number): number {
  if (lanes <= 1) return 0
  let hash = 0x811c9dc5
  for (let index = 0; index < chatUuid.length; index++) hash = Math.imul(hash ^ chatUuid.charCodeAt(index), 0x01000193)
  return (hash >>> 0) % lanes
}

/** The console topic a lane belongs to (with one lane, or a topic without lanes: itself). */
export function baseTopic (topic: string, lanes: number): string {
  if (lanes <= 1 || !(topic === Topic.consoles || topic === Topic.anyWidget || topic.startsWith('consoles/') || topic.startsWith('any-widget/') || topic.startsWith('widget:'))) return topic
  // The lane is always the last `/<k>`, whatever a widget name holds.
  const slash = topic.lastIndexOf('/')
  return slash < 0 ? topic : topic.slice(0, slash)
}

/**
 * The topics an audience travels on. A chat with a widget goes out on two lanes, its widget's and
 * `anyWidget`, which reach disjoint consoles (Hub.deliver picks the lane by topic), so no console gets
 * it twice and a node holding only filtered consoles never receives other widgets' traffic.
 */
export function audienceTopics (audience: Audience, lanes = 1): string[] {
  switch (audience.scope) {
    case 'chat':
      return [Topic.chat(audience.chat)]
    case 'sources': {
      const widget = audience.chat.widget
      const lane = laneOf(audience.chat.uuid, lanes)
      return widget === undefined
        ? [laned(Topic.consoles, lane, lanes)]
        : [laned(Topic.widget(widget), lane, lanes), laned(Topic.anyWidget, lane, lanes)]
    }
    case 'broadcast':
      return [laned(Topic.consoles, 0, lanes)]
    case 'operator':
      return [Topic.operator(audience.operatorId)]
    default: {
      const unknownAudience: never = audience
      throw new Error(`unknown audience ${JSON.stringify(unknownAudience)}`)
    }
  }
}
