/**
 * `npm run token` (scripts/token.ts): a socket JWT signed with the relay's JWT_SECRET, read from the
 * environment the relay reads (its own config rules apply), for trying the relay by hand or from scripts.
 * Exit codes: 0 printed, 1 no usable secret, 2 bad flags.
 */
import { readFileSync } from 'node:fs'
import { parseArgs, parseEnv } from 'node:util'

const USAGE = `usage: npm run token -- --role user|operator --sub <id> [--chat <uuid>] [--ttl 1h]
                      [--sources-widgets a,b] [--sources-departments 1,2] [--dotenv <path>]

  --role                 user (a customer: needs --chat) or operator (with --chat: in that chat;
                         without: the /broadcast console)
  --sub                  the user's id (the JWT sub)
  --chat                 the chat uuid the socket may join (/chat)
  --ttl                  lifetime: seconds, or a number with s, m, h or d (default 1h; at most 30d)
  --sources-widgets      operators: the widget sources their console sees (comma-separated)
  --sources-departments  operators: the department ids their console sees (comma-separated)
  --dotenv               read variables from this .env file first, as \`node --env-file\` would give
                         them to the relay (which itself reads only its environment)

Signs with JWT_SECRET (HS256), as the relay verifies it. Prints the token and nothing else.`

/** Bad flags: exit 2 with the message and the usage. */
class UsageError extends Error {
  override name = 'UsageError'
}

interface TokenRequest {
  role: 'user' | 'operator'
  sub: string
  chat?: string
  ttlSeconds: number
  sources?: { widgets?: string[], departments?: string[] }
}

const TTL_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400 }
const MAX_TTL_SECONDS = 30 * 86_400

function parseTtl (text: string): number {
  const match = /^(\d+)([smhd]?)$/.exec(text.trim())
  const seconds = match === null ? NaN : Number(match[1]) * (TTL_UNITS[match[2] || 's'] ?? NaN)
  if (!Number.isSafeInteger(seconds) || seconds <= 0 || seconds > MAX_TTL_SECONDS) {
    throw new UsageError(`--ttl ${JSON.stringify(text)}: expected seconds or a number with s, m, h or d, between 1s and 30d`)
  }
  return seconds
}

function list (text: string, flag: string): string[] {
  const items = text.split(',').map((item) => item.trim()).filter((item) => item !== '')
  if (items.length === 0) throw new UsageError(`${flag} needs at least one value (comma-separated)`)
  return items
}

/** The flags, checked: what a token for them would carry. Throws UsageError. */
function parseFlags (args: string[]): TokenRequest & { help: boolean, envFile?: string } {
  let values: Record<string, string | boolean | undefined>
  try {
    values = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        role: { type: 'string' },
        sub: { type: 'string' },
        chat: { type: 'string' },
        ttl: { type: 'string' },
        'sources-widgets': { type: 'string' },
        'sources-departments': { type: 'string' },
        dotenv: { type: 'string' },
        help: { type: 'boolean', short: 'h' }
      }
    }).values
  } catch (error) {
    throw new UsageError((error as Error).message)
  }
  const text = (name: string): string | undefined => values[name] as string | undefined
  const envFile = text('dotenv')
  if (values.help === true) return { help: true, role: 'user', sub: '', ttlSeconds: 0 }
  const role = text('role')
  if (role !== 'user' && role !== 'operator') {
    throw new UsageError(role === undefined ? '--role is required (user or operator)' : `--role ${JSON.stringify(role)}: use user or operator`)
  }
  const sub = text('sub')?.trim()
  if (sub === undefined || sub === '') throw new UsageError('--sub is required (the user\'s id)')
  const chat = text('chat')?.trim()
  if (chat === '' || (chat !== undefined && chat.length > 200)) throw new UsageError('--chat must be 1 to 200 characters')
  if (role === 'user' && chat === undefined) throw new UsageError('--role user needs --chat <uuid>: a customer joins one chat')
  const widgets = text('sources-widgets')
  const departments = text('sources-departments')
  if (role === 'user' && (widgets !== undefined || departments !== undefined)) {
    throw new UsageError('--sources-widgets and --sources-departments are for operators (--role operator)')
  }
  const request: TokenRequest & { help: boolean, envFile?: string } = { help: false, role, sub, ttlSeconds: parseTtl(text('ttl') ?? '1h') }
  if (chat !== undefined) request.chat = chat
  if (widgets !== undefined || departments !== undefined) {
    request.sources = {
      ...(widgets === undefined ? {} : { widgets: list(widgets, '--sources-widgets') }),
      ...(departments === undefined ? {} : { departments: list(departments, '--sources-departments') })
    }
  }
  if (envFile !== undefined) request.envFile = envFile
  return request
}

/**
 * A token signed with the secret the relay verifies with, found by the relay's own rules (src/config.ts)
 * applied to JWT_SECRET and JWT_PUBLIC_KEY only: the token needs nothing else. Loaded only once the flags
 * are good, so a usage error answers at once. Throws ConfigError.
 */
async function signToken (request: TokenRequest, env: Record<string, string | undefined>, nowMs = Date.now()): Promise<string> {
  const [{ ConfigError, loadConfig }, { createSigner }] = await Promise.all([import('../src/config.js'), import('fast-jwt')])
  const config = loadConfig({ JWT_SECRET: env.JWT_SECRET, JWT_PUBLIC_KEY: env.JWT_PUBLIC_KEY })
  if (config.jwtAlgorithm !== 'HS256') {
    throw new ConfigError(`JWT_PUBLIC_KEY is set: the relay verifies ${config.jwtAlgorithm} tokens, which only the holder of ` +
      'the private key can sign. Sign them where that key lives (your backend), or run the relay with JWT_SECRET instead')
  }
  if (config.generated.JWT_SECRET !== undefined) {
    throw new ConfigError('JWT_SECRET is not set. Without it the relay makes up a new secret at every start (it prints ' +
      '"relay: no secrets configured; generated for this run") that no other process can know. Give this command ' +
      'the same JWT_SECRET as the relay: the printed one (JWT_SECRET=<it> npm run token -- ...), or set one ' +
      '(16+ characters) for both, in their environment or with --dotenv')
  }
  const iat = Math.floor(nowMs / 1000)
  const claims: Record<string, unknown> = { sub: request.sub, role: request.role, iat, exp: iat + request.ttlSeconds }
  if (request.chat !== undefined) claims.chat = request.chat
  if (request.sources !== undefined) claims.sources = request.sources
  return createSigner({ key: config.jwtKey, algorithm: 'HS256' })(claims)
}

export interface Output {
  stdout: (text: string) => void
  stderr: (text: string) => void
}

const processOutput: Output = {
  stdout: (text) => { process.stdout.write(text) },
  stderr: (text) => { process.stderr.write(text) }
}

/** The command: its exit code. `env` is what the relay would read; a --dotenv file adds what it lacks. */
export async function main (args: string[], env: Record<string, string | undefined> = process.env, output: Output = processOutput): Promise<number> {
  let request: ReturnType<typeof parseFlags>
  try {
    request = parseFlags(args)
  } catch (error) {
    if (!(error instanceof UsageError)) throw error
    output.stderr(`token: ${error.message}\n\n${USAGE}\n`)
    return 2
  }
  if (request.help) {
    output.stdout(`${USAGE}\n`)
    return 0
  }
  let variables = env
  try {
    // As node --env-file: the environment wins over the file.
    if (request.envFile !== undefined) variables = { ...parseEnv(readFileSync(request.envFile, 'utf8')), ...env }
  } catch (error) {
    output.stderr(`token: cannot read --dotenv ${request.envFile ?? ''}: ${(error as Error).message}\n`)
    return 2
  }
  let token: string
  try {
    token = await signToken(request, variables)
  } catch (error) {
    if ((error as Error).name !== 'ConfigError') throw error
    output.stderr(`token: ${(error as Error).message}\n`)
    return 1
  }
  output.stdout(`${token}\n`)
  return 0
}
