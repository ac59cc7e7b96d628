import type { TSchema } from 'typebox'
import { Claims } from '../auth.js'
import {
  AUTH, clientEventDocs, closeCodeDocs, closeCodeTable, serverEventDocs, SOURCES_RULE, WIRE, type Endpoint, type Json, type JsonObject
} from './asyncapi-docs.js'
import { clientFrames, CloseCode, serverFrames, type ClientEventType, type ServerEventType } from './protocol.js'

/**
 * The AsyncAPI 3.0 document of the two sockets, built from the TypeBox schemas that validate and type
 * the frames (protocol.ts) and the words of asyncapi-docs.ts.
 */


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

function clientEndpointsOf (type: ClientEventType): readonly Endpoint[] {
  return clientEventDocs[type].endpoints ?? ['chat']
}

export function clientTypesOn (endpoint: Endpoint): ClientEventType[] {
  return (Object.keys(clientEventDocs) as ClientEventType[]).filter((type) => clientEndpointsOf(type).includes(endpoint))
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
  const message = (type: string, schema: TSchema, summary: string, description: string): JsonObject =>
    ({ name: type, title: type, summary, description, contentType: 'application/json', payload: hoistSchemas(schema, schemas) })
  for (const [type, schema] of Object.entries(clientFrames) as Array<[ClientEventType, TSchema]>) {
    const doc = clientEventDocs[type]
    const on = clientEndpointsOf(type).map((endpoint) => `\`/${endpoint}\``).join(' and ')
    messages[type] = message(type, schema, doc.summary, `Client → relay, on ${on}. ${doc.effect}`)
  }
  for (const [type, schema] of Object.entries(serverFrames) as Array<[ServerEventType, TSchema]>) {
    const doc = serverEventDocs[type]
    messages[type] = message(type, schema, doc.summary, `Relay → client. ${doc.routing}`)
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
  const sinceParameter: JsonObject = {
    type: 'string',
    pattern: '^[A-Za-z0-9_-]*={0,2}$',
    description: 'recover what was missed: base64url of JSON {<stream>: {epoch, offset}}, the last offset received per stream'
  }

  const operations: Record<string, JsonObject> = {}
  for (const type of clientTypes) {
    const doc = clientEventDocs[type]
    for (const endpoint of clientEndpointsOf(type)) {
      const suffix = clientEndpointsOf(type).length > 1 ? `On${pascal(endpoint)}` : ''
      operations[`receive${pascal(type)}${suffix}`] = {
        action: 'receive',
        channel: ref(`#/channels/${endpoint}`),
        title: `${type} (client → relay)`,
        summary: doc.summary,
        description: doc.effect,
        messages: [ref(`#/channels/${endpoint}/messages/${type}`)],
        reply: {
          channel: ref(`#/channels/${endpoint}`),
          messages: doc.replies.map((reply) => ref(`#/channels/${endpoint}/messages/${reply}`))
        }
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
        messages: channelMessages([...clientTypesOn('chat'), ...serverEventsOn('chat')]),
        bindings: wsBinding({
          type: 'object',
          properties: {
            token: tokenParameter,
            chat: { type: 'string', description: 'optional; must equal the token\'s chat claim' },
            since: sinceParameter,
            history: { type: 'string', pattern: '^[0-9]+$', description: 'the last N durable frames this socket may see (N at most HISTORY_SIZE), sent after connected; ignored with since' }
          }
        })
      },
      broadcast: {
        address: '/broadcast',
        title: 'Operator console',
        description: `Operators only (\`role: operator\`, else close 4403); every chat the operator may see. ${SOURCES_RULE} ` +
          'The console sends no client events but `ping`.',
        messages: channelMessages([...clientTypesOn('broadcast'), ...serverEventsOn('broadcast')]),
        bindings: wsBinding({ type: 'object', properties: { token: tokenParameter, since: sinceParameter } })
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
