import { randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { defaultRetention, type Bus, type StreamRetention } from '../src/stores/bus.js'
import { MemoryBus } from '../src/stores/bus-memory.js'
import { RedisBus } from '../src/stores/bus-redis.js'
import type { ChatLog } from '../src/stores/chat-log.js'
import type { IdempotencyStore } from '../src/stores/idempotency.js'
import { MemoryIdempotency } from '../src/stores/idempotency-memory.js'
import { RedisIdempotency } from '../src/stores/idempotency-redis.js'
import { MemoryChatLog } from '../src/stores/chat-log-memory.js'
import { RedisChatLog } from '../src/stores/chat-log-redis.js'
import { presencePackets, type Presence } from '../src/stores/presence.js'
import { MemoryPresence } from '../src/stores/presence-memory.js'
import { RedisPresence } from '../src/stores/presence-redis.js'
import { createNodeClient, createRedisClient, createRedisCluster, type RedisClientOptions, type RedisCommands, type RedisLogger, type RedisTarget } from '../src/stores/redis.js'
import { ShardedSubscriber, type SubscriberConnection } from '../src/stores/sharded-subscriber.js'

/** Where the relay keeps and moves state: the bus between nodes, presence, the chat log, ingest idempotency. */
export interface Stores {
  bus: Bus
  presence: Presence
  chatLog: ChatLog
  idempotency: IdempotencyStore
}

declare module 'fastify' {
  interface FastifyInstance {
    stores: Stores
  }
}

interface OpenedStores extends Stores {
  /** Closes what was opened for the stores, after the bus and presence let go of it. */
  disconnect: () => Promise<void>
}

interface Connections {
  publisher: RedisCommands
  subscriber: SubscriberConnection
  close: () => Promise<void>
}

/**
 * One Redis or Sentinel: a publishing and a subscribing connection. A cluster: a cluster client for
 * commands and scripts (each routed to its slot's master) and a subscriber per master (sharded pub/sub).
 */
function connect (url: RedisTarget, options: Omit<RedisClientOptions, 'role'>, log: RedisLogger): Connections {
  if (url.mode !== 'cluster') {
    const publisher = createRedisClient(url, { ...options, role: 'publish' })
    const subscriber = createRedisClient(url, { ...options, role: 'subscribe' })
    return {
      publisher,
      subscriber,
      close: async () => {
        // disconnect() after quit(): it also closes what quit() leaves (sentinel connections, a client already ended).
        await Promise.all([publisher, subscriber].map(async (client) => {
          await client.quit().catch(() => {})
          client.disconnect()
        }))
      }
    }
  }
  const publisher = createRedisCluster(url, { ...options, role: 'publish' })
  const subscriber = new ShardedSubscriber(publisher, (address) => createNodeClient(address, url, { ...options, role: 'subscribe' }), log)
  return {
    publisher,
    subscriber,
    close: async () => {
      subscriber.disconnect()
      await publisher.quit().catch(() => {})
      publisher.disconnect()
    }
  }
}

/**
 * Redis: presence, the chat log and idempotency share the publishing connection, and presence publishes
 * its events itself, inside the scripts that decide them.
 */
function redisStores (app: FastifyInstance, url: RedisTarget): OpenedStores {
  const { config } = app
  const log = app.log.child({ component: 'redis' })
  const nodeId = randomUUID()
  const options = { retryMaxMs: config.REDIS_RETRY_MAX_MS, commandTimeoutMs: config.PUBLISH_TIMEOUT_MS, node: nodeId }
  const { publisher, subscriber, close } = connect(url, options, log)
  const sharded = url.mode === 'cluster'
  log.info({ nodeId, prefix: config.REDIS_PREFIX, mode: url.mode }, 'redis bus: connecting in the background')
  // Without history, settle one retry interval (plus a margin) after a reconnect: every node has
  // resubscribed by then. With it, a node repairs from the streams what it missed while resubscribing.
  const bus = new RedisBus({
    publisher,
    subscriber,
    prefix: config.REDIS_PREFIX,
    sharded,
    retention: retentionOf(config),
    // Under the command timeout: a WAIT that outlives it would drop the connection.
    replicaAcks: { replicas: config.replicaAcks, timeoutMs: Math.max(1, Math.floor(config.PUBLISH_TIMEOUT_MS / 2)) },
    settleMs: config.HISTORY_SIZE > 0 ? 0 : config.REDIS_RETRY_MAX_MS + 500,
    // Presence announcements are ephemeral whatever the history: they always wait for the others.
    announceSettleMs: config.REDIS_RETRY_MAX_MS + 500,
    appendWhileResubscribing: config.HISTORY_SIZE > 0,
    pingIntervalMs: config.PRESENCE_HEARTBEAT_MS,
    log,
    events: { probeFailed: () => app.metrics.busProbeFailures.inc(), resubscribed: () => app.metrics.busResubscribes.inc() }
  })
  return {
    bus,
    presence: new RedisPresence({
      client: publisher,
      bus,
      prefix: config.REDIS_PREFIX,
      nodeId,
      heartbeatMs: config.PRESENCE_HEARTBEAT_MS,
      ttlMs: config.PRESENCE_TTL_MS,
      maxSocketsPerUser: config.MAX_SOCKETS_PER_USER,
      // customer_presence is durable: its scripts append it (emit) from an argument carrying its stream.
      packets: (event, socket) => presencePackets(event, socket, config.consoleLanes).map(({ topic, packet, durable }) =>
        durable === undefined ? { topic, packet } : { topic, packet: bus.durableArgument(topic, durable) }),
      metrics: app.metrics,
      log,
      sharded
    }),
    chatLog: new RedisChatLog({ client: publisher, prefix: config.REDIS_PREFIX, sharded, ...chatLogBounds(config) }),
    idempotency: new RedisIdempotency({ client: publisher, prefix: config.REDIS_PREFIX, sharded }),
    disconnect: close
  }
}

function chatLogBounds (config: FastifyInstance['config']): { messagesPerChat: number, maxBytes: number, typingPerSecond: number } {
  return { messagesPerChat: config.CHAT_LOG_PER_CHAT, maxBytes: config.CHAT_LOG_MAX_BYTES, typingPerSecond: config.TYPING_PER_SEC }
}

function retentionOf (config: FastifyInstance['config']): StreamRetention {
  return { ...defaultRetention, size: config.HISTORY_SIZE, ttlSeconds: config.HISTORY_TTL_S }
}

function memoryStores (app: FastifyInstance): OpenedStores {
  const bus = new MemoryBus({ ...retentionOf(app.config), maxHistoryBytes: app.config.HISTORY_MAX_BYTES })
  const presence = new MemoryPresence({
    bus,
    packets: (event, socket) => presencePackets(event, socket, app.config.consoleLanes),
    metrics: app.metrics,
    maxSocketsPerUser: app.config.MAX_SOCKETS_PER_USER,
    log: app.log.child({ component: 'presence' })
  })
  return { bus, presence, chatLog: new MemoryChatLog(chatLogBounds(app.config)), idempotency: new MemoryIdempotency(), disconnect: async () => {} }
}

/** The bus, presence, chat log and idempotency: in-memory unless REDIS_URL names a Redis. Boot never waits for Redis. */
export default fp(async (app) => {
  const url = app.config.redis
  const { bus, presence, chatLog, idempotency, disconnect } = url === undefined ? memoryStores(app) : redisStores(app, url)
  app.metrics.busUp.set(bus.isReady() ? 1 : 0)
  app.metrics.redisInfo.set({ mode: url?.mode ?? 'none' }, 1)
  let wasDown = false
  bus.onStateChange((state) => {
    app.metrics.busUp.set(state === 'ready' ? 1 : 0)
    if (state === 'down') {
      wasDown = true
      app.log.warn({ bus: bus.kind }, 'bus down')
    } else if (wasDown) {
      wasDown = false
      app.metrics.busReconnects.inc()
      app.log.info({ bus: bus.kind }, 'bus back')
    }
  })
  app.decorate('stores', { bus, presence, chatLog, idempotency })
  app.addHook('onClose', async () => {
    await presence.close()
    await bus.close()
    app.metrics.busUp.set(0)
    await disconnect()
  })
}, { name: 'stores', dependencies: ['config', 'metrics'] })
