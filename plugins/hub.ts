import fp from 'fastify-plugin'
import { ClientEvents } from '../src/client-events.js'
import { FrameHandler } from '../src/frame-handler.js'
import { Hub } from '../src/hub.js'
import { Publisher } from '../src/publisher.js'
import { SocketSessions } from '../src/sessions.js'
import { Webhook } from '../src/webhook.js'
import { FAST_PATH_WS_VERSION, installedWsVersion } from '../src/writer.js'
import './types.js'

/** The hub (local sockets and fan-out), the publisher, and socket session handling. */
export default fp(async (app) => {
  const { config, metrics, bus, chatLog, presence } = app
  const log = app.log.child({ component: 'hub' })
  const webhook = config.WEBHOOK_URL === undefined
    ? null
    : new Webhook(config.WEBHOOK_URL, config.WEBHOOK_TOKEN, config.WEBHOOK_TIMEOUT_MS, metrics)
  const hub = new Hub(bus, metrics, log)
  if (!hub.writer.fastPath) {
    log.warn({ ws: installedWsVersion(), fastPathWs: FAST_PATH_WS_VERSION }, 'ws is not the pinned release: frames go through ws.send (slower, still correct)')
  }
  const publisher = new Publisher(bus, chatLog, metrics, { timeoutMs: config.PUBLISH_TIMEOUT_MS, rememberMessages: webhook === null })
  const frames = new FrameHandler(new ClientEvents(publisher, chatLog, webhook, metrics), metrics, log, {
    maxJsonDepth: config.MAX_JSON_DEPTH,
    queueMax: config.CLIENT_QUEUE_MAX
  })
  const sessions = new SocketSessions(hub, presence, frames, app.verifyToken, metrics, log, {
    allowedOrigins: config.allowedOrigins,
    pingIntervalMs: config.PING_INTERVAL_MS,
    maxConnectionsPerIp: config.MAX_CONNECTIONS_PER_IP,
    limits: {
      maxBufferedBytes: config.MAX_BUFFERED_BYTES,
      ratePerSecond: config.RATE_LIMIT_PER_SEC,
      burst: config.RATE_LIMIT_BURST,
      abuseStrikes: config.ABUSE_STRIKES
    }
  })
  app.decorate('hub', hub)
  app.decorate('publisher', publisher)
  app.decorate('sessions', sessions)
  app.addHook('preClose', async () => sessions.close())
}, { name: 'hub', dependencies: ['config', 'metrics', 'bus', 'auth'] })
