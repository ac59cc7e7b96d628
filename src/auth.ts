import { timingSafeEqual, createHash } from 'node:crypto'
import { createVerifier } from 'fast-jwt'
import { Type, type Static } from 'typebox'
import { Compile } from 'typebox/compile'
import type { Config } from './config.js'
import { CloseCode, Sources, User } from './protocol/protocol.js'
import { Role, type SourcesFilter } from './protocol/routing.js'

export const Claims = Type.Object({
  sub: Type.Union([Type.String({ minLength: 1 }), Type.Integer()]),
  role: Type.String({ minLength: 1 }),
  exp: Type.Number(),
  chat: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  sources: Type.Optional(Sources),
  user: Type.Optional(User)
}, { additionalProperties: true })
export type Claims = Static<typeof Claims>

const claimsCheck = Compile(Claims)

export interface Principal {
  userId: string
  role: string
  chatUuid?: string
  sources?: SourcesFilter
  /** `exp` in ms since epoch: an open socket is closed with 4401 then. */
  expiresAt: number
  /** The raw sources claim, echoed by /online-users. */
  sourcesClaim: { widgets: readonly string[], departments: ReadonlyArray<string | number> }
  user: User
}

/** Why a socket is refused: the close code and a reason safe to show (never the token). */
export class SocketAuthError extends Error {
  override name = 'SocketAuthError'
  /** `reason`: a fixed label for metrics (relay_sockets_refused_total). */
  constructor (readonly closeCode: number, message: string, readonly reason: RefusalReason = closeCode === CloseCode.forbidden ? 'forbidden' : 'token') {
    super(message)
  }
}

export type RefusalReason = 'token' | 'forbidden' | 'origin' | 'draining' | 'ip_cap' | 'user_cap'

/** Verifies socket JWTs with exactly the configured algorithm; `exp` is required. */
export function createTokenVerifier (config: Pick<Config, 'jwtAlgorithm' | 'jwtKey'>): (token: string) => Principal {
  const verify = createVerifier({
    key: config.jwtKey,
    algorithms: [config.jwtAlgorithm],
    requiredClaims: ['exp'],
    cache: 1000
  })
  return (token) => {
    let payload: unknown
    try {
      payload = verify(token)
    } catch (error) {
      const code = (error as { code?: string }).code
      const reason = code === 'FAST_JWT_EXPIRED' ? 'token expired' : 'invalid token'
      throw new SocketAuthError(CloseCode.badToken, reason)
    }
    if (!claimsCheck.Check(payload)) {
      // The path names a claim of our schema; the claim's value is never echoed.
      const first = claimsCheck.Errors(payload)[0]
      throw new SocketAuthError(CloseCode.badToken, `invalid token claims: ${first?.instancePath.slice(1, 40) ?? ''}`.trim())
    }
    return principalOf(payload)
  }
}

/** An absent sources list: one shared empty array (presence keeps a console's lists while it is open). */
const NONE: readonly never[] = Object.freeze([])

function principalOf (claims: Claims): Principal {
  const userId = String(claims.sub)
  const widgets = claims.sources?.widgets
  const departments = claims.sources?.departments
  const principal: Principal = {
    userId,
    role: claims.role,
    expiresAt: claims.exp * 1000,
    sourcesClaim: { widgets: widgets ?? NONE, departments: departments ?? NONE },
    user: claims.user ?? { id: /^\d+$/.test(userId) ? Number(userId) : userId, role: claims.role }
  }
  if (claims.chat !== undefined) principal.chatUuid = claims.chat
  if (claims.sources !== undefined) {
    const sources: SourcesFilter = {}
    if (widgets !== undefined) sources.widgets = new Set(widgets)
    if (departments !== undefined) sources.departments = new Set(departments.map(String))
    principal.sources = sources
  }
  return principal
}

/** Endpoint rules: `/broadcast` is for operators; `/chat` needs the chat claim and a known role. */
export function authorize (endpoint: 'chat' | 'broadcast', principal: Principal, requestedChat?: string): void {
  if (endpoint === 'broadcast') {
    if (principal.role !== Role.operator) throw new SocketAuthError(CloseCode.forbidden, 'broadcast is for operators')
    return
  }
  if (principal.role !== Role.operator && principal.role !== Role.customer) {
    throw new SocketAuthError(CloseCode.forbidden, 'role may not join a chat')
  }
  if (principal.chatUuid === undefined) throw new SocketAuthError(CloseCode.forbidden, 'token has no chat claim')
  if (requestedChat !== undefined && requestedChat !== principal.chatUuid) {
    throw new SocketAuthError(CloseCode.forbidden, 'token does not admit this chat')
  }
}

/** Constant-time match of an Api-Token against the configured list (hashes equalize the lengths). */
export function createApiTokenCheck (tokens: string[]): (candidate: string | undefined) => boolean {
  const digests = tokens.map((token) => createHash('sha256').update(token).digest())
  return (candidate) => {
    if (candidate === undefined || candidate === '') return false
    const digest = createHash('sha256').update(candidate).digest()
    let match = false
    for (const expected of digests) match = timingSafeEqual(expected, digest) || match
    return match
  }
}
