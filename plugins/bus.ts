import fp from 'fastify-plugin'
import type { Bus } from '../src/bus.js'
import { MemoryBus } from '../src/bus-memory.js'
import { MemoryChatLog } from '../src/chat-log.js'
import { MemoryPresence } from '../src/presence.js'
import './types.js'

/** The bus, presence and chat log: in-memory unless REDIS_URL names a Redis. */
export default fp(async (app) => {
  const bus: Bus = new MemoryBus()
  const presence = new MemoryPresence()
  const chatLog = new MemoryChatLog()
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
  })
}, { name: 'bus', dependencies: ['config', 'metrics'] })
