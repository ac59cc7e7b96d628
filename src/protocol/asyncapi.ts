import type { TSchema } from 'typebox'
import { Claims } from '../auth.js'
import {
  clientFrames, CloseCode, ErrorCode, serverFrames, type ClientEventType, type ServerEventType
} from './protocol.js'

/**
 * The AsyncAPI 3.0 document of the two sockets, built from the TypeBox schemas that validate and type
 * the frames (protocol.ts). Only words live here: who receives what (SPEC.md's routing table), close and
 * error codes. A new frame schema without its words here is a type error.
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
  summary: string
  effect: string
  /** What the relay answers with, on the same /chat socket or the room. */
  replies: readonly ServerEventType[]
}

const SOURCES_RULE = 'A `/broadcast` session sees a chat when its token `sources` admit it: `sources.widgets` contains ' +
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
  error: {
    endpoints: ['chat', 'broadcast'],
    summary: 'A frame of this socket was refused or failed',
    routing: 'To the socket whose frame failed; the socket stays open (until abuse closes it with 4429). `code` is one of: ' +
      `${Object.values(ErrorCode).map((code) => `\`${code}\``).join(', ')}. ` +
      '`/broadcast` accepts no client events: any frame there is answered with `unknown_type`.'
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
  }
}

export const closeCodeDocs: Record<keyof typeof CloseCode, string> = {
  badToken: 'missing, invalid or expired token (also when an open socket\'s token `exp` passes)',
  forbidden: 'role, chat or origin not allowed (`/broadcast` is for `role: operator` only)',
  abuse: 'sustained rate-limit or invalid-frame abuse, or over `MAX_SOCKETS_PER_USER` (per chat room, or `/broadcast` per operator, over all nodes) or `MAX_CONNECTIONS_PER_IP`',
  tooLarge: 'frame larger than `MAX_FRAME_BYTES`',
  unsupportedData: 'a binary frame: the protocol is JSON text frames',
  restarting: 'server restarting (drain): reconnect, the load balancer sends you to another node',
  slowConsumer: 'slow consumer: the send buffer passed `MAX_BUFFERED_BYTES`'
}

const closeCodeTable = Object.entries(CloseCode)
  .map(([name, code]) => `| ${code} | ${closeCodeDocs[name as keyof typeof CloseCode]} |`).join('\n')

const AUTH = 'Authentication: a JWT in the `token` query parameter (browsers) or an `Authorization: Bearer` header. ' +
  'Claims (schema `JwtClaims`): `sub` (user id), `role` (`user` or `operator`), `exp` (required), `chat` (chat uuid; ' +
  'required on `/chat`), `sources` (`{widgets?, departments?}`, operators), `user` (profile echoed in events). ' +
  'HS256 with `JWT_SECRET`, or RS256/ES256 with `JWT_PUBLIC_KEY`; other algorithms are refused. A refused socket ' +
  'is upgraded and then closed with 4401/4403 before any other frame.'

const WIRE = 'Every frame is a JSON text frame `{"type": "<event>", "data": {...}}`. Unknown extra fields in payloads ' +
  'pass through untouched. The relay pings every socket periodically and terminates sockets that stop answering. ' +
  'Client events are rate limited per socket: over the limit a frame is answered with `error` `rate_limited`, and ' +
  'sustained abuse closes the socket with 4429.'

/** Copies a TypeBox schema to plain JSON, moving every nested schema with an `$id` to `schemas` (by name). */
export function hoistSchemas (schema: TSchema, schemas: Record<string, JsonObject>): JsonObject {
  const plain = JSON.parse(JSON.stringify(schema)) as JsonObject
  return hoistNode(plain, schemas, true) as JsonObject
}

function hoistNode (node: Json, schemas: Record<string, JsonObject>, root: boolean): Json {
  if (Array.isArray(node)) return node.map((item) => hoistNode(item, schemas, false))
  if (node === null || typeof node !== 'object') return node
  const { $id, ...rest } = node
  const copy: JsonObject = {}
  for (const [key, value] of Object.entries(rest)) copy[key] = hoistNode(value, schemas, false)
  if (typeof $id !== 'string' || root) return copy
  const known = schemas[$id]
  if (known !== undefined && JSON.stringify(known) !== JSON.stringify(copy)) {
    throw new Error(`two different schemas are named ${$id}`)
  }
  schemas[$id] = copy
  return { $ref: `#/components/schemas/${$id}` }
}

const pascal = (type: string): string => type.split('_').map((word) => word.charAt(0).toUpperCase() + word.slice(1)).join('')
const ref = (path: string): JsonObject => ({ $ref: path })

export function serverEventsOn (endpoint: Endpoint): ServerEventType[] {
  return (Object.keys(serverEventDocs) as ServerEventType[]).filter((type) => serverEventDocs[type].endpoints.includes(endpoint))
}

export interface AsyncApiOptions {
  /** host[:port] clients connect to (the default of the `host` server variable). */
  host: string
  version: string
}

/** The AsyncAPI 3.0.0 document of `/chat` and `/broadcast`. */
export function buildAsyncApi (options: AsyncApiOptions): JsonObject {
  const schemas: Record<string, JsonObject> = {}
  const messages: Record<string, JsonObject> = {}
  for (const [type, schema] of Object.entries(clientFrames) as Array<[ClientEventType, TSchema]>) {
    const doc = clientEventDocs[type]
    messages[type] = {
      name: type,
      title: type,
      summary: doc.summary,
      description: `Client → relay, on \`/chat\` only. ${doc.effect}`,
      contentType: 'application/json',
      payload: hoistSchemas(schema, schemas)
    }
  }
  for (const [type, schema] of Object.entries(serverFrames) as Array<[ServerEventType, TSchema]>) {
    const doc = serverEventDocs[type]
    messages[type] = {
      name: type,
      title: type,
      summary: doc.summary,
      description: `Relay → client. ${doc.routing}`,
      contentType: 'application/json',
      payload: hoistSchemas(schema, schemas)
    }
  }
  schemas.JwtClaims = hoistSchemas(Claims, schemas)

  const channelMessages = (types: readonly string[]): JsonObject =>
    Object.fromEntries(types.map((type) => [type, ref(`#/components/messages/${type}`)]))
  const clientTypes = Object.keys(clientFrames) as ClientEventType[]
  const wsBinding = (query: JsonObject): JsonObject => ({
    ws: {
      method: 'GET',
      query,
      headers: {
        type: 'object',
        properties: { Authorization: { type: 'string', pattern: '^Bearer ', description: 'the JWT, instead of the `token` query parameter' } }
      },
      bindingVersion: '0.1.0'
    }
  })
  const tokenParameter: JsonObject = { type: 'string', description: 'the JWT (or use the Authorization header)' }

  const operations: Record<string, JsonObject> = {}
  for (const type of clientTypes) {
    const doc = clientEventDocs[type]
    operations[`receive${pascal(type)}`] = {
      action: 'receive',
      channel: ref('#/channels/chat'),
      title: `${type} (client → relay)`,
      summary: doc.summary,
      description: doc.effect,
      messages: [ref(`#/channels/chat/messages/${type}`)],
      reply: {
        channel: ref('#/channels/chat'),
        messages: doc.replies.map((reply) => ref(`#/channels/chat/messages/${reply}`))
      }
    }
  }
  for (const endpoint of ['chat', 'broadcast'] as const) {
    for (const type of serverEventsOn(endpoint)) {
      operations[`send${pascal(type)}To${pascal(endpoint)}`] = {
        action: 'send',
        channel: ref(`#/channels/${endpoint}`),
        title: `${type} on /${endpoint}`,
        summary: serverEventDocs[type].summary,
        description: serverEventDocs[type].routing,
        messages: [ref(`#/channels/${endpoint}/messages/${type}`)]
      }
    }
  }

  return {
    asyncapi: '3.0.0',
    info: {
      title: 'Live support relay: sockets',
      version: options.version,
      description: `WebSocket API of the relay for customers (\`/chat\`) and operators (\`/chat\` and the ` +
        `\`/broadcast\` console). ${WIRE}\n\n${AUTH}\n\n| close code | meaning |\n|---|---|\n${closeCodeTable}`
    },
    defaultContentType: 'application/json',
    servers: {
      relay: {
        host: '{host}',
        protocol: 'ws',
        description: 'A relay node (use wss behind TLS). Several nodes share one Redis: connect to any.',
        variables: { host: { default: options.host, description: 'host[:port] of the relay or its load balancer' } },
        security: [ref('#/components/securitySchemes/tokenQuery'), ref('#/components/securitySchemes/bearer')]
      }
    },
    channels: {
      chat: {
        address: '/chat',
        title: 'One chat room',
        description: 'A customer (`role: user`) or an operator in one chat: the chat is the token\'s `chat` claim ' +
          '(an optional `chat` query parameter must equal it, else 4403); a client can never join another chat.',
        messages: channelMessages([...clientTypes, ...serverEventsOn('chat')]),
        bindings: wsBinding({
          type: 'object',
          properties: { token: tokenParameter, chat: { type: 'string', description: 'optional; must equal the token\'s chat claim' } }
        })
      },
      broadcast: {
        address: '/broadcast',
        title: 'Operator console',
        description: `Operators only (\`role: operator\`, else close 4403); every chat the operator may see. ${SOURCES_RULE} ` +
          'The console sends no client events.',
        messages: channelMessages(serverEventsOn('broadcast')),
        bindings: wsBinding({ type: 'object', properties: { token: tokenParameter } })
      }
    },
    operations,
    components: {
      schemas,
      messages,
      securitySchemes: {
        tokenQuery: {
          type: 'httpApiKey',
          in: 'query',
          name: 'token',
          description: `The JWT in the \`token\` query parameter (browsers). ${AUTH}`
        },
        bearer: {
          type: 'http',
          scheme: 'bearer',
          bearerFormat: 'JWT',
          description: 'The JWT in an `Authorization: Bearer` header. Same claims as `tokenQuery`.'
        }
      }
    },
    'x-close-codes': Object.fromEntries(Object.entries(CloseCode).map(([name, code]) => [String(code), closeCodeDocs[name as keyof typeof CloseCode]]))
  }
}
