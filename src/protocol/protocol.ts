import { Type, type Static, type TSchema } from 'typebox'

/**
 * Every shape on the wire, once. Objects pass unknown fields through untouched (forward compatible);
 * only what routing needs is required.
 */
const open = { additionalProperties: true } as const

export const Id = Type.Union([Type.Integer(), Type.String({ minLength: 1 })], { description: 'integer from the backend; compared as a string' })

export const User = Type.Object({
  id: Id,
  role: Type.Optional(Type.String()),
  avatar: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  lastname: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  firstname: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  patronymic: Type.Optional(Type.Union([Type.String(), Type.Null()]))
}, { ...open, $id: 'User' })

const chatProperties = {
  uuid: Type.String({ minLength: 1, maxLength: 200 }),
  widget: Type.Optional(Type.Union([Type.Object({ source: Type.Optional(Type.Union([Type.String(), Type.Null()])) }, open), Type.Null()])),
  status: Type.Optional(Type.String()),
  owner_user: Type.Optional(Type.Union([User, Type.Null()])),
  operator_user: Type.Optional(Type.Union([User, Type.Null()])),
  department: Type.Optional(Type.Union([Type.Object({ id: Type.Optional(Id) }, open), Type.Null()]))
}
export const Chat = Type.Object(chatProperties, { ...open, $id: 'Chat' })

/** A chat that names its assigned operator: the body of POST /notifications/chat. */
export const AssignedChat = Type.Object({ ...chatProperties, operator_user: User }, { ...open, $id: 'AssignedChat' })

export const Attachment = Type.Object({
  uuid: Type.String(),
  type: Type.Optional(Type.String()),
  url: Type.Optional(Type.String()),
  url_preview: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  filename: Type.Optional(Type.String()),
  extension: Type.Optional(Type.String()),
  size: Type.Optional(Type.Integer())
}, { ...open, $id: 'Attachment' })

export const MessageType = Type.Enum(['standard', 'system', 'note', 'bot'])
export const MessageStatus = Type.Enum(['new', 'delivered', 'read'])

export const Message = Type.Object({
  id: Type.Integer(),
  type: MessageType,
  type_role: Type.Optional(Type.Union([Type.String(), Type.Null()], { description: 'role a system message is meant for; required for system' })),
  status: Type.Optional(MessageStatus),
  text: Type.Optional(Type.Union([Type.String(), Type.Null()])),
  send_time: Type.Optional(Type.String()),
  message_index: Type.Optional(Type.Integer()),
  chat: Chat,
  user: Type.Optional(Type.Union([User, Type.Null()])),
  attachments: Type.Optional(Type.Array(Attachment))
}, { ...open, $id: 'Message' })

/** What the schema cannot say: the field a message lacks to be routable (POST /message and webhook answers). */
export function unroutableField (message: Message): string | undefined {
  if (message.type === 'system' && (typeof message.type_role !== 'string' || message.type_role === '')) return 'type_role'
  return undefined
}

export const Operator = Type.Object({ ...User.properties }, { ...open, $id: 'Operator' })

export const Sources = Type.Object({
  widgets: Type.Optional(Type.Array(Type.String())),
  departments: Type.Optional(Type.Array(Type.Union([Type.String(), Type.Integer()])))
}, open)

export const OnlineUser = Type.Object({
  user: User,
  sources: Type.Object({
    widgets: Type.Array(Type.String()),
    departments: Type.Array(Type.Union([Type.String(), Type.Integer()]))
  }),
  sessions: Type.Integer({ minimum: 1 }),
  connected_at: Type.String({ format: 'date-time' })
}, { $id: 'OnlineUser' })

// ---- HTTP ingest bodies ----

export const MessageBody = Type.Object({
  message: Message,
  event: Type.Optional(Type.Enum(['message_added', 'message_updated', 'message_deleted'], { default: 'message_added' }))
})
export const OperatorsBody = Type.Array(Operator)
export const GlobalBody = Type.Record(Type.String(), Type.Unknown(), { description: 'any JSON object' })
export const Ok = Type.Object({ ok: Type.Literal(true) })

/** The routes a POST /batch event may name: every publishing ingest route. */
export const PublishingRoute = Type.Enum(['/message', '/update/chat', '/update/operators', '/global', '/notifications/chat'])
export const BatchBody = Type.Object({
  events: Type.Array(Type.Object({
    route: PublishingRoute,
    body: Type.Unknown({ description: 'the body the route takes, validated against its schema' })
  }), { minItems: 1, maxItems: 100 })
})
/** One per event, in order: published, or why not (the status its route would have answered). */
export const BatchResults = Type.Object({
  results: Type.Array(Type.Union([Ok, Type.Object({ status: Type.Integer(), error: Type.String() })]))
})
export const HttpError = Type.Object({
  statusCode: Type.Integer(),
  code: Type.Optional(Type.String()),
  error: Type.String(),
  message: Type.String()
})

/** POST /customers/online: the chats a console is about to show. */
export const CustomersOnlineBody = Type.Object({
  chats: Type.Array(chatProperties.uuid, { minItems: 1, maxItems: 1000 })
})
/** The customers holding a socket in one chat, over every node. */
export const ChatCustomers = Type.Object({
  chat: Type.Object({ uuid: Type.String() }),
  users: Type.Array(User)
}, { $id: 'ChatCustomers' })

// ---- Client → relay frames (/chat) ----

export const SendMessageData = Type.Object({
  text: Type.String({ maxLength: 20000 }),
  attachments: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 200 }), { maxItems: 50 })),
  client_message_id: Type.Optional(Type.Union([Type.String({ maxLength: 200 }), Type.Integer()]))
}, open)
export const MarkMessageData = Type.Object({ message_id: Type.Integer() }, open)
export const UpdateTypingData = Type.Object({
  text: Type.Optional(Type.String({ maxLength: 2000 })),
  stopped: Type.Boolean()
}, open)

function frame<Name extends string, Data extends TSchema> (type: Name, data: Data) {
  return Type.Object({ type: Type.Literal(type), data }, { $id: type })
}

/**
 * A durable frame (SPEC Recovery): `stream` and `offset` beside `type` and `data`. Optional in the
 * schema because the relay adds them when the event's stream numbers it; every one on the wire has both.
 */
function durableFrame<Name extends string, Data extends TSchema> (type: Name, data: Data) {
  return Type.Object({
    type: Type.Literal(type),
    data,
    stream: Type.Optional(Type.String({ description: 'the stream this event belongs to (opaque; see connected.streams)' })),
    offset: Type.Optional(Type.Integer({ minimum: 1, description: '+1 per event of the stream; reconnect with since to get what you missed' }))
  }, { $id: type })
}

export const SendMessageFrame = frame('send_message', SendMessageData)
export const MarkMessageDeliveredFrame = frame('mark_message_delivered', MarkMessageData)
export const MarkMessageReadFrame = frame('mark_message_read', MarkMessageData)
export const UpdateTypingFrame = frame('update_typing', UpdateTypingData)

/** Browsers cannot see WebSocket pings: a client may ask for a `pong` frame (both endpoints; `data` optional). */
export const PingFrame = Type.Object({ type: Type.Literal('ping'), data: Type.Optional(Type.Object({}, open)) }, { $id: 'ping' })

export const clientFrames = {
  send_message: SendMessageFrame,
  mark_message_delivered: MarkMessageDeliveredFrame,
  mark_message_read: MarkMessageReadFrame,
  update_typing: UpdateTypingFrame,
  ping: PingFrame
} as const
export type ClientEventType = keyof typeof clientFrames
export type ClientFrame = Static<typeof SendMessageFrame> | Static<typeof MarkMessageDeliveredFrame>
| Static<typeof MarkMessageReadFrame> | Static<typeof UpdateTypingFrame> | Static<typeof PingFrame>

// ---- Relay → client frames ----

const ChatRef = Type.Object({ uuid: Type.String() }, open)

/** A stream's epoch and an offset in it (SPEC Recovery). */
export const StreamPosition = Type.Object({
  epoch: Type.String({ pattern: '^[0-9a-z]{1,32}$' }),
  offset: Type.Integer({ minimum: 0 })
})

export const serverFrames = {
  connected: frame('connected', Type.Object({
    connection_id: Type.String(),
    user: User,
    chat: Type.Optional(ChatRef),
    streams: Type.Optional(Type.Record(Type.String(), StreamPosition, {
      description: 'every stream the socket reads, at the position it stands in once the replay (if any) is sent'
    })),
    recovered: Type.Optional(Type.Boolean({ description: 'present when the client sent since: true when every missed durable frame follows' }))
  })),
  message_added: durableFrame('message_added', Type.Object({ message: Message })),
  message_updated: durableFrame('message_updated', Type.Object({ message: Message })),
  message_deleted: durableFrame('message_deleted', Type.Object({ message: Type.Object({ id: Type.Integer(), chat: ChatRef }) })),
  message_not_added: frame('message_not_added', Type.Object({
    reason: Type.String(),
    client_message_id: Type.Optional(Type.Union([Type.String(), Type.Integer()])),
    text: Type.Optional(Type.String())
  })),
  typing_updated: frame('typing_updated', Type.Object({
    chat: ChatRef,
    user: User,
    text: Type.Optional(Type.String()),
    stopped: Type.Boolean()
  })),
  user_connected: frame('user_connected', Type.Object({ chat: ChatRef, user: User })),
  user_disconnected: frame('user_disconnected', Type.Object({ chat: ChatRef, user: User })),
  chat_updated: durableFrame('chat_updated', Type.Object({ chat: Chat })),
  operator_updated: durableFrame('operator_updated', Type.Object({ operators: Type.Array(Operator) })),
  global_updated: durableFrame('global_updated', GlobalBody),
  chat_notification: durableFrame('chat_notification', Type.Object({ chat: AssignedChat })),
  customer_presence: durableFrame('customer_presence', Type.Object({ chat: ChatRef, user: User, online: Type.Boolean() })),
  error: frame('error', Type.Object({ code: Type.String(), message: Type.String() })),
  pong: frame('pong', Type.Object({}, open))
} as const
export type ServerEventType = keyof typeof serverFrames
export type ServerFrame<T extends ServerEventType = ServerEventType> = Static<(typeof serverFrames)[T]>

export type User = Static<typeof User>
export type Chat = Static<typeof Chat>
export type AssignedChat = Static<typeof AssignedChat>
export type Message = Static<typeof Message>
export type MessageStatus = Static<typeof MessageStatus>
export type Operator = Static<typeof Operator>
export type Sources = Static<typeof Sources>
export type OnlineUser = Static<typeof OnlineUser>
export type MessageBody = Static<typeof MessageBody>
export type PublishingRoute = Static<typeof PublishingRoute>
export type ChatCustomers = Static<typeof ChatCustomers>

/** Stable codes of the `error` frame. */
export const ErrorCode = {
  invalidJson: 'invalid_json',
  unknownType: 'unknown_type',
  invalidPayload: 'invalid_payload',
  rateLimited: 'rate_limited',
  messageNotFound: 'message_not_found',
  webhookFailed: 'webhook_failed',
  unavailable: 'unavailable',
  internal: 'internal_error'
} as const

/** Close codes of SPEC.md. */
export const CloseCode = {
  badToken: 4401,
  forbidden: 4403,
  abuse: 4429,
  tooLarge: 1009,
  unsupportedData: 1003,
  restarting: 1012,
  slowConsumer: 1013
} as const
