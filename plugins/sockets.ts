import fp from 'fastify-plugin'
import { ClientEvents } from '../src/client-events.js'
import { FrameHandler } from '../src/socket/frame-handler.js'
import { Hub } from '../src/socket/hub.js'
import { SocketSessions } from '../src/socket/sessions.js'
import { Webhook } from '../src/webhook.js'
import { FAST_PATH_WS_VERSION, installedWsVersion } from '../src/socket/writer.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** This node's sockets: their lifecycle, and through `hub` their indexes and fan-out. */
    sockets: SocketSessions
  }
}

/** The sockets of this node: hub (indexes, fan-out), client frames and events, sessions. */
export default fp(async (app) => {
  const { config, metrics, publisher } = app
  const { bus, chatLog, presence } = app.stores
  const log = app.log.child({ component: 'hub' })
  const webhook = config.WEBHOOK_URL === undefined
    ? null
    : new Webhook(config.WEBHOOK_URL, config.WEBHOOK_TOKEN, config.WEBHOOK_TIMEOUT_MS, metrics)
  const hub = new Hub(bus, metrics, log, { readLimit: config.REPLAY_LIMIT, closeWindowMs: config.DRAIN_WINDOW_MS, lanes: config.consoleLanes })
  if (!hub.writer.fastPath) {
    log.warn({ ws: installedWsVersion(), fastPathWs: FAST_PATH_WS_VERSION }, 'ws is not the pinned release: frames go through ws.send (slower, still correct)')
  }
  const frames = new FrameHandler(new ClientEvents(publisher, chatLog, webhook, metrics), metrics, log, {
    maxJsonDepth: config.MAX_JSON_DEPTH,
    queueMax: config.CLIENT_QUEUE_MAX
  })
  const sessions = new SocketSessions(hub, presence, chatLog, frames, app.auth.verifyToken, metrics, log, {
    allowedOrigins: config.allowedOrigins,
    pingIntervalMs: config.PING_INTERVAL_MS,
    maxConnectionsPerIp: config.MAX_CONNECTIONS_PER_IP,
    replayLimit: config.REPLAY_LIMIT,
    historySize: config.HISTORY_SIZE,
    limits: {
      maxBufferedBytes: config.MAX_BUFFERED_BYTES,
      ratePerSecond: config.RATE_LIMIT_PER_SEC,
      burst: config.RATE_LIMIT_BURST,
      abuseStrikes: config.ABUSE_STRIKES
    }
  })
  app.decorate('sockets', sessions)
  app.addHook('preClose', async () => await sessions.close())
}, { name: 'sockets', dependencies: ['config', 'metrics', 'stores', 'auth', 'publisher'] })
