import { randomUUID } from 'node:crypto'
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import type { Bus } from '../src/bus.js'
import { MemoryBus } from '../src/bus-memory.js'
import { RedisBus } from '../src/bus-redis.js'
import { MemoryChatLog, type ChatLog } from '../src/chat-log.js'
import { RedisChatLog } from '../src/chat-log-redis.js'
import { MemoryPresence, type Presence } from '../src/presence.js'
import { RedisPresence } from '../src/presence-redis.js'
import { createRedisClient } from '../src/redis.js'
import './types.js'

interface Backend {
  bus: Bus
  presence: Presence
  chatLog: ChatLog
  /** Closes what the backend opened, after the bus and presence let go of it. */
  disconnect: () => Promise<void>
}

/** Redis: two connections (publish, subscribe); presence and the chat log share the publishing one. */
function redisBackend (app: FastifyInstance, url: string): Backend {
  const { config } = app
  const log = app.log.child({ component: 'redis' })
  const options = { retryMaxMs: config.REDIS_RETRY_MAX_MS, commandTimeoutMs: config.PUBLISH_TIMEOUT_MS }
  const publisher = createRedisClient(url, { ...options, role: 'publish' })
  const subscriber = createRedisClient(url, { ...options, role: 'subscribe' })
  const nodeId = randomUUID()
  log.info({ nodeId, prefix: config.REDIS_PREFIX }, 'redis bus: connecting in the background')
  return {
    // Settle one retry interval (plus a margin) after a reconnect: every node has resubscribed by then.
    bus: new RedisBus({
      publisher,
      subscriber,
      prefix: config.REDIS_PREFIX,
      settleMs: config.REDIS_RETRY_MAX_MS + 500,
      pingIntervalMs: config.PRESENCE_HEARTBEAT_MS,
      log
    }),
    presence: new RedisPresence({
      client: publisher,
      prefix: config.REDIS_PREFIX,
      nodeId,
      heartbeatMs: config.PRESENCE_HEARTBEAT_MS,
      ttlMs: config.PRESENCE_TTL_MS,
      log
    }),
    chatLog: new RedisChatLog({ client: publisher, prefix: config.REDIS_PREFIX }),
    disconnect: async () => {
      await Promise.all([publisher, subscriber].map(async (client) => {
        await client.quit().catch(() => client.disconnect())
      }))
    }
  }
}

function memoryBackend (): Backend {
  return { bus: new MemoryBus(), presence: new MemoryPresence(), chatLog: new MemoryChatLog(), disconnect: async () => {} }
}

/** The bus, presence and chat log: in-memory unless REDIS_URL names a Redis. Boot never waits for Redis. */
export default fp(async (app) => {
  const url = app.config.REDIS_URL
  const { bus, presence, chatLog, disconnect } = url === undefined ? memoryBackend() : redisBackend(app, url)
  app.metrics.busUp.set(bus.isReady() ? 1 : 0)
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
  app.decorate('bus', bus)
  app.decorate('presence', presence)
  app.decorate('chatLog', chatLog)
  app.addHook('onClose', async () => {
    await presence.close()
    await bus.close()
    app.metrics.busUp.set(0)
    await disconnect()
  })
}, { name: 'bus', dependencies: ['config', 'metrics'] })
