import { randomBytes, createPublicKey } from 'node:crypto'
import envSchema from 'env-schema'
import { Type, type Static } from 'typebox'
import { parseAddresses, type RedisAddress, type RedisTarget } from './stores/redis.js'

/** The environment the relay reads, with its defaults: the single source of the Config type. */
export const EnvSchema = Type.Object({
  NODE_ENV: Type.String({ default: 'development' }),
  PORT: Type.Integer({ minimum: 0, maximum: 65535, default: 4000 }),
  HOST: Type.String({ default: '127.0.0.1' }),
  LOG_LEVEL: Type.Enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], { default: 'info' }),
  API_TOKEN: Type.Optional(Type.String({ minLength: 1, description: 'comma-separated list, for rotation' })),
  JWT_SECRET: Type.Optional(Type.String({ minLength: 16 })),
  JWT_PUBLIC_KEY: Type.Optional(Type.String({ minLength: 1, description: 'PEM (RS256 or ES256)' })),
  REDIS_URL: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  REDIS_SENTINELS: Type.Optional(Type.String({ minLength: 1, description: 'host:port,… of Redis Sentinels: the relay follows the primary they name (instead of REDIS_URL)' })),
  REDIS_CLUSTER_NODES: Type.Optional(Type.String({ minLength: 1, description: 'host:port,… of some Redis Cluster nodes (the rest is discovered): sharded pub/sub, one slot per stream (instead of REDIS_URL)' })),
  REDIS_SENTINEL_NAME: Type.String({ minLength: 1, default: 'mymaster', description: 'the primary\'s name in the Sentinels\' configuration' }),
  REDIS_SENTINEL_PASSWORD: Type.Optional(Type.String({ minLength: 1, description: 'the Sentinels\' own password, if they require one' })),
  REDIS_USERNAME: Type.Optional(Type.String({ minLength: 1, description: 'ACL user for the data nodes with REDIS_SENTINELS or REDIS_CLUSTER_NODES (with REDIS_URL, put it in the URL)' })),
  REDIS_PASSWORD: Type.Optional(Type.String({ minLength: 1, description: 'password for the data nodes with REDIS_SENTINELS or REDIS_CLUSTER_NODES (with REDIS_URL, put it in the URL)' })),
  CONSOLE_LANES: Type.Optional(Type.Integer({ minimum: 1, maximum: 64, description: 'streams each console topic is split into, a chat always on one (on a Redis Cluster: spread over the shards); default 8 with REDIS_CLUSTER_NODES, else 1; the same on every node' })),
  REDIS_REPLICA_ACKS: Type.Optional(Type.Integer({ minimum: 0, maximum: 16, description: 'replicas that must hold a durable event before it is acknowledged (WAIT); default 1 with REDIS_SENTINELS or REDIS_CLUSTER_NODES, 0 with REDIS_URL' })),
  REDIS_PREFIX: Type.String({ default: 'relay:' }),
  REDIS_RETRY_MAX_MS: Type.Integer({ minimum: 10, default: 1000, description: 'longest wait between Redis reconnect attempts' }),
  PRESENCE_HEARTBEAT_MS: Type.Integer({ minimum: 10, default: 5000, description: 'how often a node renews its presence heartbeat, sweeps dead nodes and pings its Redis subscriber' }),
  PRESENCE_TTL_MS: Type.Integer({ minimum: 20, default: 15000, description: 'a node silent this long is dead: its sessions leave presence' }),
  WEBHOOK_URL: Type.Optional(Type.String({ pattern: '^https?://' })),
  WEBHOOK_TOKEN: Type.Optional(Type.String()),
  WEBHOOK_TIMEOUT_MS: Type.Integer({ minimum: 1, default: 5000 }),
  ALLOWED_ORIGINS: Type.Optional(Type.String({ description: 'comma-separated list; unset: any origin' })),
  BODY_LIMIT: Type.Integer({ minimum: 1024, default: 1048576 }),
  MAX_FRAME_BYTES: Type.Integer({ minimum: 256, default: 65536 }),
  MAX_BUFFERED_BYTES: Type.Integer({ minimum: 1024, default: 4194304, description: 'send buffer bound before close 1013' }),
  PING_INTERVAL_MS: Type.Integer({ minimum: 10, default: 30000 }),
  RATE_LIMIT_PER_SEC: Type.Number({ exclusiveMinimum: 0, default: 20 }),
  RATE_LIMIT_BURST: Type.Integer({ minimum: 1, default: 40 }),
  ABUSE_STRIKES: Type.Integer({ minimum: 1, default: 20, description: 'rejected or invalid frames before close 4429' }),
  PUBLISH_TIMEOUT_MS: Type.Integer({ minimum: 1, default: 2000 }),
  SHUTDOWN_TIMEOUT_MS: Type.Integer({ minimum: 100, default: 10000 }),
  DRAIN_WINDOW_MS: Type.Integer({ minimum: 0, default: 5000 }),
  MAX_SOCKETS_PER_USER: Type.Integer({ minimum: 1, default: 10, description: 'sockets one user may hold per chat room, and /broadcast sockets per operator, over all nodes; the next closes 4429' }),
  MAX_CONNECTIONS_PER_IP: Type.Integer({ minimum: 0, default: 0, description: 'open sockets per client address on this node; 0: off (behind a load balancer every socket has its address)' }),
  MAX_CONNECTIONS: Type.Integer({ minimum: 0, default: 0, description: 'TCP connections this node accepts (server.maxConnections); 0: off' }),
  MAX_JSON_DEPTH: Type.Integer({ minimum: 2, maximum: 256, default: 32, description: 'deepest nesting of client JSON (frames and ingest bodies)' }),
  TYPING_PER_SEC: Type.Integer({ minimum: 1, default: 2, description: 'update_typing relayed per user and chat per second, over all nodes; the rest are dropped and counted' }),
  CLIENT_QUEUE_MAX: Type.Integer({ minimum: 1, default: 16, description: 'client events of one socket waiting to be handled; the next frame is rate_limited' }),
  CHAT_LOG_PER_CHAT: Type.Integer({ minimum: 1, default: 200, description: 'messages remembered per chat (standalone mode)' }),
  CHAT_LOG_MAX_BYTES: Type.Integer({ minimum: 65536, default: 67108864, description: 'bytes of remembered messages over all chats (standalone mode); the least recently active chats go first' }),
  IDEMPOTENCY_TTL_S: Type.Integer({ minimum: 1, default: 300, description: 'how long the answer to a request with Idempotency-Key is kept and replayed to its repeats' }),
  HISTORY_SIZE: Type.Integer({ minimum: 0, maximum: 10000, default: 100, description: 'durable events kept per stream for recovery and history; 0 turns recovery off' }),
  HISTORY_TTL_S: Type.Integer({ minimum: 1, default: 600, description: 'the history of a stream with no new event expires after this' }),
  HISTORY_MAX_BYTES: Type.Integer({ minimum: 65536, default: 67108864, description: 'bytes of history over all streams on the embedded bus (Redis is bounded by its maxmemory); the least recently written streams go first' }),
  REPLAY_LIMIT: Type.Integer({ minimum: 1, default: 300, description: 'most missed events per stream a reconnect (since) or a node repair reads back; more: recovered false, or the sockets reconnect' }),
  DEMO: Type.Boolean({ default: false, description: 'serve the demo widget and operator console at /demo/ and mint demo tokens for anyone who asks (POST /demo/token); refused with NODE_ENV=production' })
})

export type Env = Static<typeof EnvSchema>
export type JwtAlgorithm = 'HS256' | 'RS256' | 'ES256'

export interface Config extends Env {
  /** Where Redis is (REDIS_URL or REDIS_SENTINELS); undefined: the embedded bus. */
  redis: RedisTarget | undefined
  /** REDIS_REPLICA_ACKS with its default resolved. */
  replicaAcks: number
  /** CONSOLE_LANES with its default resolved. */
  consoleLanes: number
  apiTokens: string[]
  allowedOrigins: string[] | null
  jwtAlgorithm: JwtAlgorithm
  jwtKey: string
  /** Secrets the relay made up because none were configured (development only); printed once. */
  generated: { API_TOKEN?: string, JWT_SECRET?: string }
}

export class ConfigError extends Error {
  override name = 'ConfigError'
}

function splitList (value: string | undefined): string[] {
  return (value ?? '').split(',').map((item) => item.trim()).filter((item) => item.length > 0)
}

function algorithmOf (pem: string): JwtAlgorithm {
  let keyType: string | undefined
  try {
    keyType = createPublicKey(pem).asymmetricKeyType
  } catch {
    throw new ConfigError('JWT_PUBLIC_KEY is not a valid PEM public key')
  }
  if (keyType === 'rsa') return 'RS256'
  if (keyType === 'ec') return 'ES256'
  throw new ConfigError(`JWT_PUBLIC_KEY has unsupported key type ${keyType ?? 'unknown'} (use RSA or EC P-256)`)
}

function addressesOf (name: string, list: string): RedisAddress[] {
  let addresses
  try {
    addresses = parseAddresses(list)
  } catch (error) {
    throw new ConfigError(`${name}: ${(error as Error).message}`)
  }
  if (addresses.length === 0) throw new ConfigError(`${name} names no server`)
  return addresses
}

function redisTarget (parsed: Env): RedisTarget | undefined {
  const set = (['REDIS_URL', 'REDIS_SENTINELS', 'REDIS_CLUSTER_NODES'] as const).filter((name) => parsed[name] !== undefined)
  if (set.length > 1) throw new ConfigError(`${set.join(' and ')} are exclusive: set one of them`)
  const credentials = {
    ...(parsed.REDIS_USERNAME === undefined ? {} : { username: parsed.REDIS_USERNAME }),
    ...(parsed.REDIS_PASSWORD === undefined ? {} : { password: parsed.REDIS_PASSWORD })
  }
  if (parsed.REDIS_SENTINELS === undefined && parsed.REDIS_CLUSTER_NODES === undefined) {
    if (parsed.REDIS_USERNAME !== undefined || parsed.REDIS_PASSWORD !== undefined) {
      throw new ConfigError('REDIS_USERNAME and REDIS_PASSWORD go with REDIS_SENTINELS or REDIS_CLUSTER_NODES; with REDIS_URL, put them in the URL')
    }
    return parsed.REDIS_URL === undefined ? undefined : { mode: 'single', url: parsed.REDIS_URL }
  }
  if (parsed.REDIS_CLUSTER_NODES !== undefined) {
    // The prefix leads every key and channel: a brace in it would be their hash tag, one slot for all.
    if (/[{}]/.test(parsed.REDIS_PREFIX)) throw new ConfigError('REDIS_PREFIX must not contain { or } with REDIS_CLUSTER_NODES (it would be every key\'s hash tag)')
    return { mode: 'cluster', nodes: addressesOf('REDIS_CLUSTER_NODES', parsed.REDIS_CLUSTER_NODES), ...credentials }
  }
  return {
    mode: 'sentinel',
    sentinels: addressesOf('REDIS_SENTINELS', parsed.REDIS_SENTINELS as string),
    name: parsed.REDIS_SENTINEL_NAME,
    ...credentials,
    ...(parsed.REDIS_SENTINEL_PASSWORD === undefined ? {} : { sentinelPassword: parsed.REDIS_SENTINEL_PASSWORD })
  }
}

/** Validates the environment; throws a ConfigError naming the first bad variable. */
export function loadConfig (env: Record<string, string | undefined> = process.env): Config {
  let parsed: Env
  try {
    // An empty variable means unset (as in a copied .env.example).
    const data = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value !== ''))
    parsed = envSchema<Env>({ schema: EnvSchema, data, env: false })
  } catch (error) {
    throw new ConfigError((error as Error).message.replace(/env\//g, ''))
  }
  const production = parsed.NODE_ENV === 'production'
  if (parsed.DEMO && production) {
    throw new ConfigError('DEMO=true is refused when NODE_ENV=production: the demo mints tokens for anyone who asks')
  }
  const generated: Config['generated'] = {}

  let apiTokens = splitList(parsed.API_TOKEN)
  if (apiTokens.length === 0) {
    if (production) throw new ConfigError('API_TOKEN is required when NODE_ENV=production')
    generated.API_TOKEN = randomBytes(24).toString('base64url')
    apiTokens = [generated.API_TOKEN]
  }

  if (parsed.JWT_SECRET !== undefined && parsed.JWT_PUBLIC_KEY !== undefined) {
    throw new ConfigError('JWT_SECRET and JWT_PUBLIC_KEY are exclusive: set one of them')
  }
  let jwtAlgorithm: JwtAlgorithm = 'HS256'
  let jwtKey: string
  if (parsed.JWT_PUBLIC_KEY !== undefined) {
    jwtKey = parsed.JWT_PUBLIC_KEY.replace(/\\n/g, '\n')
    jwtAlgorithm = algorithmOf(jwtKey)
  } else if (parsed.JWT_SECRET !== undefined) {
    jwtKey = parsed.JWT_SECRET
  } else {
    if (production) throw new ConfigError('JWT_SECRET or JWT_PUBLIC_KEY is required when NODE_ENV=production')
    generated.JWT_SECRET = randomBytes(32).toString('base64url')
    jwtKey = generated.JWT_SECRET
  }
  if (parsed.WEBHOOK_URL !== undefined && parsed.WEBHOOK_TOKEN === undefined && production) {
    throw new ConfigError('WEBHOOK_TOKEN is required with WEBHOOK_URL when NODE_ENV=production')
  }

  if (parsed.DEMO && parsed.JWT_PUBLIC_KEY !== undefined) {
    throw new ConfigError('DEMO=true needs JWT_SECRET, not JWT_PUBLIC_KEY: the demo signs its tokens with the secret')
  }

  if (parsed.PRESENCE_TTL_MS <= parsed.PRESENCE_HEARTBEAT_MS) {
    throw new ConfigError('PRESENCE_TTL_MS must be longer than PRESENCE_HEARTBEAT_MS (a live node would expire between heartbeats)')
  }

  const origins = splitList(parsed.ALLOWED_ORIGINS)
  const redis = redisTarget(parsed)
  return {
    ...parsed,
    redis,
    replicaAcks: parsed.REDIS_REPLICA_ACKS ?? (redis === undefined || redis.mode === 'single' ? 0 : 1),
    consoleLanes: parsed.CONSOLE_LANES ?? (redis?.mode === 'cluster' ? 8 : 1),
    apiTokens,
    allowedOrigins: origins.length > 0 ? origins : null,
    jwtAlgorithm,
    jwtKey,
    generated
  }
}
