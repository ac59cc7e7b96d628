import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import swagger from '@fastify/swagger'
import type { FastifySchema } from 'fastify'
import fp from 'fastify-plugin'
import { buildAsyncApi } from '../src/protocol/asyncapi.js'

/** The version of the running package (cwd is the package root under `npm start` and in the image). */
function packageVersion (): string {
  try {
    const manifest = JSON.parse(readFileSync(join(process.cwd(), 'package.json'), 'utf8')) as { version?: unknown }
    return typeof manifest.version === 'string' ? manifest.version : '0.0.0'
  } catch {
    return '0.0.0'
  }
}

const errorDescriptions: Record<string, string> = {
  400: 'Invalid body: the message names the field',
  401: 'Missing or wrong `Api-Token`',
  413: 'Body larger than `BODY_LIMIT`',
  415: 'Body is not `application/json`',
  409: 'A request with this `Idempotency-Key` is still running (on any node): retry after `Retry-After` seconds',
  422: '`Idempotency-Key` was already used on this route with another body',
  503: 'The bus is unavailable: nothing was published; retry after `Retry-After` seconds'
}

/** Words for each documented answer (the route schemas carry only shapes). */
function describeResponses (schema: FastifySchema, url: string): FastifySchema {
  const responses = schema.response as Record<string, object> | undefined
  if (responses === undefined) return schema
  const described: Record<string, object> = {}
  for (const [status, response] of Object.entries(responses)) {
    let description = errorDescriptions[status] ?? 'OK'
    if (url === '/ready') description = status === '200' ? 'Bus connected and not draining' : 'Not ready: draining or bus down'
    else if (url === '/health') description = 'The process is alive'
    else if (url === '/customers/online' && status === '200') description = 'The customers with a socket in each chat asked, in order'
    else if (url === '/batch' && status === '200') description = 'One result per event, in order: published, or the status its route would have answered (503: not published, nor any later event)'
    else if (status === '200' && !url.startsWith('/online-users')) description = 'Published: the bus accepted the event'
    const headers = status === '503' || status === '409' ? { 'Retry-After': { type: 'integer', description: 'seconds' } } : undefined
    described[status] = { ...response, 'x-response-description': description, ...(headers === undefined ? {} : { headers }) }
  }
  return { ...schema, response: described }
}

/**
 * The API documents, generated from the schemas the code validates with: OpenAPI 3.1 of the HTTP routes
 * (collected by @fastify/swagger from every route registered after this plugin) at /openapi.json, and
 * AsyncAPI 3.0 of the sockets at /asyncapi.json. Register before the routes.
 */
export default fp(async (app) => {
  const version = packageVersion()
  await app.register(swagger, {
    openapi: {
      // 3.1: TypeBox emits JSON Schema 2020-12 (`const`, `type: null`), which 3.0 cannot carry.
      openapi: '3.1.0',
      info: {
        title: 'Live support relay: HTTP ingest',
        version,
        description: 'Backends publish events with an `Api-Token` header; `200 {"ok": true}` only once the bus ' +
          'accepted the event. The sockets are described by the AsyncAPI document at `/asyncapi.json`.'
      },
      components: {
        securitySchemes: {
          apiToken: {
            type: 'apiKey',
            in: 'header',
            name: 'Api-Token',
            description: 'One of the comma-separated tokens of `API_TOKEN` (several, for rotation).'
          }
        }
      }
    },
    // Sockets are in the AsyncAPI document; /metrics is Prometheus text, not an API.
    transform: ({ schema, url, route }) => route.websocket === true || url === '/metrics'
      ? { schema: { ...schema, hide: true }, url }
      : { schema: describeResponses(schema, url), url },
    // Shared schemas keep their TypeBox names (#/components/schemas/Message), not def-N.
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, index) => typeof json.$id === 'string' ? json.$id : `def-${index}`
    },
    convertConstToEnum: false
  })

  const { HOST, PORT } = app.config
  const asyncapi = buildAsyncApi({ host: `${HOST === '0.0.0.0' || HOST === '::' ? 'localhost' : HOST}:${PORT}`, version })
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger())
  app.get('/asyncapi.json', { schema: { hide: true } }, async () => asyncapi)
}, { name: 'docs', dependencies: ['config'] })
