import { createHash } from 'node:crypto'
import { Cluster, Redis } from 'ioredis'
import type { StoreUnavailableError } from './store-errors.js'

export interface RedisLogger {
  info: (object: object, message: string) => void
  warn: (object: object, message: string) => void
  error: (object: object, message: string) => void
}

export interface RedisClientOptions {
  /** Shown in CLIENT LIST and in logs: `publish` or `subscribe`. */
  role: string
  /** This relay node's id, also in CLIENT LIST (`relay-<role>-<node>`), so an operator can tell nodes apart. */
  node?: string
  /** Longest wait between reconnect attempts. */
  retryMaxMs: number
  /** A command without an answer this long fails and drops the connection (it must not hang callers). */
  commandTimeoutMs: number
}

export interface RedisAddress { host: string, port: number }

/** Where the relay's Redis is: one server by URL, or the primary a set of Sentinels names. */
export type RedisTarget =
  | { mode: 'single', url: string }
  | {
    mode: 'sentinel'
    sentinels: RedisAddress[]
    /** The monitored primary's name (REDIS_SENTINEL_NAME). */
    name: string
    username?: string
    password?: string
    sentinelPassword?: string
  }
  | {
    mode: 'cluster'
    /** Some nodes of the cluster (REDIS_CLUSTER_NODES): the rest is discovered. */
    nodes: RedisAddress[]
    username?: string
    password?: string
  }

/** Where commands and scripts go: one connection, or a cluster client routing each to its slot's master. */
export type RedisCommands = Redis | Cluster

/** `host:port,host:port` (REDIS_SENTINELS); throws naming the bad entry. */
export function parseAddresses (list: string): RedisAddress[] {
  return list.split(',').map((item) => item.trim()).filter((item) => item.length > 0).map((item) => {
    const match = /^(.+):(\d{1,5})$/.exec(item)
    const port = Number(match?.[2])
    if (match === null || port < 1 || port > 65535) throw new Error(`"${item}" is not host:port`)
    return { host: (match[1] as string).replace(/^\[(.*)\]$/, '$1'), port }
  })
}

/**
 * A connection that never queues while Redis is away: a command fails at once, so a publish with
 * Redis down is a 503, never a hang. It connects in the background (boot never waits for Redis) and
 * reconnects forever with a capped backoff; with Sentinels, to whichever server they name primary.
 */
export function createRedisClient (target: string | Exclude<RedisTarget, { mode: 'cluster' }>, options: RedisClientOptions): Redis {
  const where = typeof target === 'string' ? { mode: 'single' as const, url: target } : target
  const common = connectionOptions(options)
  if (where.mode === 'single') return new Redis(where.url, common)
  return new Redis({
    ...common,
    sentinels: where.sentinels,
    name: where.name,
    ...credentials(where),
    ...(where.sentinelPassword === undefined ? {} : { sentinelPassword: where.sentinelPassword }),
    // Every sentinel down: keep asking, as a single Redis keeps reconnecting.
    sentinelRetryStrategy: common.retryStrategy
    // No failoverDetector: in ioredis 6.0.0 its +switch-master can interrupt the sentinel connect loop
    // and end the connection for good (no more retries). A killed primary drops the connection, a
    // Sentinel failover disconnects clients, and socketTimeout catches a hung one: each reconnects.
  })
}

function credentials (where: { username?: string, password?: string }): { username?: string, password?: string } {
  return {
    ...(where.username === undefined ? {} : { username: where.username }),
    ...(where.password === undefined ? {} : { password: where.password })
  }
}

/** Commands and scripts on a Redis Cluster, each routed to the master of its slot; as createRedisClient, it never queues. */
export function createRedisCluster (target: Extract<RedisTarget, { mode: 'cluster' }>, options: RedisClientOptions): Cluster {
  const { retryStrategy, enableOfflineQueue, ...perNode } = connectionOptions(options)
  return new Cluster(target.nodes, {
    enableOfflineQueue,
    clusterRetryStrategy: retryStrategy,
    // A failed-over or migrated slot answers MOVED: follow it at once, a few times.
    maxRedirections: 4,
    retryDelayOnFailover: 100,
    retryDelayOnClusterDown: 100,
    slotsRefreshTimeout: options.commandTimeoutMs,
    redisOptions: { ...perNode, ...credentials(target) }
  })
}

/** A plain connection to one node of a cluster (a shard's subscriber). */
export function createNodeClient (address: RedisAddress, target: Extract<RedisTarget, { mode: 'cluster' }>, options: RedisClientOptions): Redis {
  return new Redis({ ...connectionOptions(options), host: address.host, port: address.port, ...credentials(target) })
}

function connectionOptions (options: RedisClientOptions) {
  const retryStrategy = (attempt: number): number => Math.min(50 * 2 ** Math.min(attempt, 10), options.retryMaxMs)
  return {
    connectionName: options.node === undefined ? `relay-${options.role}` : `relay-${options.role}-${options.node}`,
    enableOfflineQueue: false,
    // Commands in flight when the connection drops fail at once instead of being resent later (a late
    // PUBLISH after a 503 would deliver an event the backend will post again).
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    // The bus resubscribes itself, so it knows when every topic is back.
    autoResubscribe: false,
    commandTimeout: options.commandTimeoutMs,
    // A Redis that stops answering (hung, or a half-open connection) is dropped and reconnected: the
    // bus turns 'down' and /ready says so, instead of every publish waiting out its timeout.
    socketTimeout: options.commandTimeoutMs,
    keepAlive: 10_000,
    retryStrategy
  }
}

/** A Lua script run by EVALSHA, loaded again by EVAL when Redis lost its script cache (a restart). */
export class LuaScript {
  readonly sha: string

  constructor (readonly source: string) {
    this.sha = createHash('sha1').update(source).digest('hex')
  }

  async run (client: RedisCommands, keys: string[], args: Array<string | number>): Promise<unknown> {
    try {
      return await client.evalsha(this.sha, keys.length, ...keys, ...args)
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error
      return await client.eval(this.source, keys.length, ...keys, ...args)
    }
  }

  /** As `run`, with bulk replies as Buffers (binary packets stay bytes). */
  async runBuffer (client: RedisCommands, keys: string[], args: Array<string | number>): Promise<unknown> {
    try {
      return await client.callBuffer('evalsha', this.sha, keys.length, ...keys, ...args)
    } catch (error) {
      if (!(error instanceof Error) || !error.message.startsWith('NOSCRIPT')) throw error
      return await client.callBuffer('eval', this.source, keys.length, ...keys, ...args)
    }
  }
}

/** Registers a listener and returns the function that removes exactly that listener. */
export function listen (client: { on: (event: string, listener: (...args: any[]) => void) => unknown, off: (event: string, listener: (...args: any[]) => void) => unknown }, event: string, listener: (...args: never[]) => void): () => void {
  const handler = listener as (...args: unknown[]) => void
  client.on(event, handler)
  return () => { client.off(event, handler) }
}

/**
 * One Redis call of a store: refused at once while the connection is not ready (it never queues), and any
 * failure rethrown as the store's own unavailable error, naming what failed.
 */
export async function storeCommand<T> (
  client: RedisCommands,
  Unavailable: new (message: string) => StoreUnavailableError,
  what: string,
  run: () => Promise<T>
): Promise<T> {
  if (client.status !== 'ready') throw new Unavailable(`${what}: redis is not connected`)
  try {
    return await run()
  } catch (error) {
    throw new Unavailable(`${what}: ${(error as Error).message}`)
  }
}
