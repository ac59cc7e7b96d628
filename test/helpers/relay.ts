import type { AddressInfo } from 'node:net'
import { createSigner } from 'fast-jwt'
import type { FastifyInstance, FastifyServerOptions } from 'fastify'
import { buildApp, type BuildOptions } from '../../app.js'
import { loadConfig, type Config } from '../../src/config.js'

export const API_TOKEN = 'test-api-token-primary'
export const ROTATED_API_TOKEN = 'test-api-token-rotated'
export const JWT_SECRET = 'test-jwt-secret-of-enough-length'

export interface Tap {
  teardown: (fn: () => unknown) => void
}

export interface Relay {
  app: FastifyInstance
  config: Config
  /** ws://127.0.0.1:PORT */
  wsUrl: string
  /** http://127.0.0.1:PORT */
  httpUrl: string
  post: (path: string, body: unknown, token?: string) => Promise<{ statusCode: number, body: string, headers: Record<string, unknown> }>
}

export function testConfig (env: Record<string, string> = {}): Config {
  return loadConfig({
    API_TOKEN: `${API_TOKEN},${ROTATED_API_TOKEN}`,
    JWT_SECRET,
    PORT: '0',
    LOG_LEVEL: 'silent',
    ...env
  })
}

/** A relay on an ephemeral port, closed when the test ends. */
export async function startRelay (t: Tap, env: Record<string, string> = {}, logger?: FastifyServerOptions['logger']): Promise<Relay> {
  const config = testConfig(env)
  return await listenRelay(t, logger === undefined ? { config } : { config, logger })
}

/** A relay built with these options, listening on an ephemeral port, closed when the test ends. */
export async function listenRelay (t: Tap, options: BuildOptions): Promise<Relay> {
  const app = await buildApp(options)
  await app.listen({ port: 0, host: '127.0.0.1' })
  t.teardown(async () => await app.close())
  const { port } = app.server.address() as AddressInfo
  return {
    app,
    config: options.config,
    wsUrl: `ws://127.0.0.1:${port}`,
    httpUrl: `http://127.0.0.1:${port}`,
    post: async (path, body, token = API_TOKEN) => {
      const response = await app.inject({ method: 'POST', url: path, payload: body as object, headers: { 'api-token': token } })
      return { statusCode: response.statusCode, body: response.body, headers: response.headers }
    }
  }
}

const signHs256 = createSigner({ key: JWT_SECRET, algorithm: 'HS256', expiresIn: 3_600_000 })

export interface TokenClaims {
  sub: string
  role: string
  chat?: string
  sources?: { widgets?: string[], departments?: Array<string | number> }
  user?: Record<string, unknown>
  [claim: string]: unknown
}

export function token (claims: TokenClaims): string {
  return signHs256(claims)
}

export function customerToken (id: number, chat: string): string {
  return token({ sub: String(id), role: 'user', chat, user: { id, role: 'user', firstname: `Customer${id}` } })
}

export function operatorToken (id: number, options: { chat?: string, sources?: TokenClaims['sources'] } = {}): string {
  const claims: TokenClaims = { sub: String(id), role: 'operator', user: { id, role: 'operator', firstname: `Operator${id}` } }
  if (options.chat !== undefined) claims.chat = options.chat
  if (options.sources !== undefined) claims.sources = options.sources
  return token(claims)
}
