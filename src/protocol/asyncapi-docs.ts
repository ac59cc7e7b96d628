import { CloseCode, ErrorCode, type ClientEventType, type ServerEventType } from './protocol.js'

/**
 * The words of the AsyncAPI document (asyncapi.ts builds it from the schemas): who receives what
 * (SPEC.md's routing table), what each client event does, the close and error codes. A new frame schema
 * without its words here is a type error.
 */

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json }
export type JsonObject = { [key: string]: Json }
export type Endpoint = 'chat' | 'broadcast'

interface ServerEventDoc {
  /** The sockets that can receive it. */
  endpoints: readonly Endpoint[]
  summary: string
  /** Who receives it: the routing rule. */
  routing: string
}

interface ClientEventDoc {
  /** The sockets that take it (default: /chat). */
  endpoints?: readonly Endpoint[]
  summary: string
  effect: string
  /** What the relay answers with, on the same /chat socket or the room. */
  replies: readonly ServerEventType[]
}

export const SOURCES_RULE = 'A `/broadcast` session sees a chat when its token `sources` admit it: `sources.widgets` contains ' +
  '`chat.widget.source` (when both are present) and `sources.departments` contains `chat.department.id` (when both ' +
  'are present); a session without `sources`, or a chat with neither field, is not filtered.'

const MESSAGE_ROUTING = 'Routed by `message.type`: `standard` and `bot` reach every socket of the chat room (customer ' +
  'and operators, the sender of a client `send_message` too) and the `/broadcast` sessions whose sources admit the ' +
  'chat; `system` reaches only the `/chat` sockets whose token `role` equals `message.type_role`, never a console; ' +
  '`note` reaches only operators in the chat room. Per chat, events arrive in the order the relay accepted them.'

export const serverEventDocs: Record<ServerEventType, ServerEventDoc> = {
  connected: {
    endpoints: ['chat', 'broadcast'],
    summary: 'First frame after a successful upgrade',
    routing: 'Sent once to the new socket: its `connection_id`, the `user` of its token and, on `/chat`, the ' +
      '`chat` of its token. Nothing published after it is missed.'
  },
  message_added: {
    endpoints: ['chat', 'broadcast'],
    summary: 'A new message in a chat',
    routing: `From \`POST /message\` (event \`message_added\`, the default) or a client \`send_message\`. ${MESSAGE_ROUTING}`
  },
  message_updated: {
    endpoints: ['chat', 'broadcast'],
    summary: 'A message changed (status, text, ...)',
    routing: `From \`POST /message\` with \`event: message_updated\` or a client mark. ${MESSAGE_ROUTING}`
  },
  message_deleted: {
    endpoints: ['chat', 'broadcast'],
    summary: 'A message was deleted: only its `id` and `chat.uuid`',
    routing: 'From `POST /message` with `event: message_deleted` and the whole message. It reaches exactly the sockets ' +
      `the deleted message reached, so a customer never learns of a note or an operator-only system message. ${MESSAGE_ROUTING} ` +
      'Standalone, the relay forgets the message: a later mark of it is `error` `message_not_found`.'
  },
  message_not_added: {
    endpoints: ['chat'],
    summary: 'A send_message was not accepted',
    routing: 'To the sender socket only, when its `send_message` failed: `reason` is `webhook_status`, ' +
      '`webhook_timeout`, `webhook_network`, `webhook_invalid_response` or `unavailable` (bus down); ' +
      '`client_message_id` and `text` are echoed so the client can retry.'
  },
  typing_updated: {
    endpoints: ['chat', 'broadcast'],
    summary: 'Someone is typing (or stopped) in a chat',
    routing: 'From a customer: operators in the chat room and the `/broadcast` sessions whose sources admit the ' +
      'chat, with `text`. From an operator: the customer in the chat room without `text`, the other operators in ' +
      'the room with `text`, never a console. Never echoed to the typist.'
  },
  user_connected: {
    endpoints: ['chat'],
    summary: 'A user opened its first socket in the chat',
    routing: 'To the other participants of the chat room when a user opens its first socket in the chat on any ' +
      'relay node; never to that user, never to a console. A second socket of the same user is not announced.'
  },
  user_disconnected: {
    endpoints: ['chat'],
    summary: 'A user closed its last socket in the chat',
    routing: 'To the other participants of the chat room when the last socket of a user in the chat closes on ' +
      'every relay node (or its node died); never to that user, never to a console.'
  },
  chat_updated: {
    endpoints: ['broadcast'],
    summary: 'A chat changed (status, assignment, ...)',
    routing: `From \`POST /update/chat\`. To the \`/broadcast\` sessions whose sources admit the chat; never a chat room. ${SOURCES_RULE}`
  },
  operator_updated: {
    endpoints: ['broadcast'],
    summary: 'Operators changed (status, profile, ...)',
    routing: 'From `POST /update/operators`. To every `/broadcast` session; never a chat room.'
  },
  global_updated: {
    endpoints: ['broadcast'],
    summary: 'Global state for consoles (the posted object is the data)',
    routing: 'From `POST /global`. To every `/broadcast` session; never a chat room.'
  },
  chat_notification: {
    endpoints: ['broadcast'],
    summary: 'A chat was assigned to an operator',
    routing: 'From `POST /notifications/chat`. Only to the `/broadcast` sessions of operator ' +
      '`chat.operator_user.id` (ids compare as strings: `501` matches `sub: "501"`), on whichever node they are.'
  },
  customer_presence: {
    endpoints: ['broadcast'],
    summary: 'A customer opened its first socket in a chat (online) or closed its last one',
    routing: 'To the `/broadcast` sessions whose sources admit the chat, when a customer (role `user`) opens its ' +
      'first socket in the chat on any relay node (`online: true`) or its last one there closes or its node dies ' +
      '(`online: false`); never a chat room, never for operators, not for a second socket. A chat whose scope the ' +
      `relay was not told when the customer connected reaches only sessions without \`sources\`. ${SOURCES_RULE}`
  },
  pong: {
    endpoints: ['chat', 'broadcast'],
    summary: 'The answer to a client `ping`',
    routing: 'Only the socket that sent `ping`.'
  },
  error: {
    endpoints: ['chat', 'broadcast'],
    summary: 'A frame of this socket was refused or failed',
    routing: 'To the socket whose frame failed; the socket stays open (until abuse closes it with 4429). `code` is one of: ' +
      `${Object.values(ErrorCode).map((code) => `\`${code}\``).join(', ')}. ` +
      '`/broadcast` accepts only `ping`: any other frame there is answered with `unknown_type`.'
  }
}

const WEBHOOK = 'With `WEBHOOK_URL` set, the relay POSTs `{event, chat: {uuid}, user, data}` to it with header ' +
  '`Api-Token: WEBHOOK_TOKEN`; a 2xx answer carrying `{message}` is published like `POST /message`, an empty 2xx ' +
  'means the backend publishes by itself.'

export const clientEventDocs: Record<ClientEventType, ClientEventDoc> = {
  send_message: {
    summary: 'Send a message to the chat of the token',
    effect: `${WEBHOOK} The published message is \`message_added\`; a non-2xx answer, a timeout or a network error ` +
      'gives the sender `message_not_added`. Standalone (no `WEBHOOK_URL`): the relay creates the message itself ' +
      '(`id` and `message_index` strictly increasing per chat, `type: standard`, `type_role` = sender role, ' +
      '`status: new`, `send_time` now, `user` from the token) and publishes `message_added`, which reaches the sender too.',
    replies: ['message_added', 'message_not_added', 'error']
  },
  mark_message_delivered: {
    summary: 'Mark a message of the chat as delivered',
    effect: `${WEBHOOK} The published message is \`message_updated\`; a failed webhook gives the sender \`error\` ` +
      '(`webhook_failed`). Standalone: the status of a message the relay knows is raised (never lowered) and ' +
      'published as `message_updated`; an unknown message is `error` `message_not_found`.',
    replies: ['message_updated', 'error']
  },
  mark_message_read: {
    summary: 'Mark a message of the chat as read',
    effect: 'Like `mark_message_delivered`, with status `read`.',
    replies: ['message_updated', 'error']
  },
  update_typing: {
    summary: 'Typing indicator',
    effect: 'Never sent to the backend: relayed at once as `typing_updated` (see its routing).',
    replies: ['typing_updated', 'error']
  },
  ping: {
    endpoints: ['chat', 'broadcast'],
    summary: 'Application-level ping (browsers cannot see WebSocket pings)',
    effect: 'Answered with `pong {}` on the same socket, after the socket\'s earlier client events; counted against the ' +
      'socket\'s rate limit like any client frame. A client that hears nothing for a while after a ping reconnects.',
    replies: ['pong', 'error']
  }
}

export const closeCodeDocs: Record<keyof typeof CloseCode, string> = {
  badToken: 'missing, invalid or expired token (also when an open socket\'s token `exp` passes)',
  forbidden: 'role, chat or origin not allowed (`/broadcast` is for `role: operator` only)',
  abuse: 'sustained rate-limit or invalid-frame abuse, or over `MAX_SOCKETS_PER_USER` (per chat room, or `/broadcast` per operator, over all nodes) or `MAX_CONNECTIONS_PER_IP`',
  tooLarge: 'frame larger than `MAX_FRAME_BYTES`',
  unsupportedData: 'a binary frame: the protocol is JSON text frames',
  restarting: 'server restarting (drain), its streams unreadable, or a stream gap it cannot repair: reconnect with since, the load balancer sends you to another node',
  slowConsumer: 'slow consumer: the send buffer passed `MAX_BUFFERED_BYTES`'
}

export const closeCodeTable = Object.entries(CloseCode)
  .map(([name, code]) => `| ${code} | ${closeCodeDocs[name as keyof typeof CloseCode]} |`).join('\n')

export const AUTH = 'Authentication: a JWT in the `token` query parameter (browsers) or an `Authorization: Bearer` header. ' +
  'Claims (schema `JwtClaims`): `sub` (user id), `role` (`user` or `operator`), `exp` (required), `chat` (chat uuid; ' +
  'required on `/chat`), `sources` (`{widgets?, departments?}`, operators), `user` (profile echoed in events). ' +
  'HS256 with `JWT_SECRET`, or RS256/ES256 with `JWT_PUBLIC_KEY`; other algorithms are refused. A refused socket ' +
  'is upgraded and then closed with 4401/4403 before any other frame.'

export const WIRE = 'Every frame is a JSON text frame `{"type": "<event>", "data": {...}}`. Durable events (messages, chat, ' +
  'operator and global updates, notifications, customer_presence) also carry `stream` and `offset`: reconnect with ' +
  '`since` (base64url JSON `{<stream>: {epoch, offset}}`, epochs from `connected.streams`) and the relay sends ' +
  '`connected {recovered: true}`, every missed frame in offset order, then live ones; `recovered: false` means refetch ' +
  'from the backend. Unknown extra fields in payloads ' +
  'pass through untouched. The relay pings every socket periodically and terminates sockets that stop answering. ' +
  'Client events are rate limited per socket: over the limit a frame is answered with `error` `rate_limited`, and ' +
  'sustained abuse closes the socket with 4429.'
