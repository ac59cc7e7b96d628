import closeWithGrace from 'close-with-grace'
import { buildApp } from './app.js'
import { ConfigError, loadConfig, type Config } from './src/config.js'

let config: Config
try {
  config = loadConfig()
} catch (error) {
  if (!(error instanceof ConfigError)) throw error
  process.stderr.write(`relay: configuration error: ${error.message}\n`)
  process.exit(1)
}

const app = await buildApp({ config })

if (Object.keys(config.generated).length > 0) {
  // Development only (production refuses to start without them): shown once, never logged again.
  const lines = Object.entries(config.generated).map(([name, value]) => `  ${name}=${value}`)
  process.stdout.write(`relay: no secrets configured; generated for this run:\n${lines.join('\n')}\n`)
}

// The drain gets at most half of the shutdown budget: close handshakes, in-flight requests and the bus
// need the rest before close-with-grace gives up and exits 1.
const drainWindowMs = Math.min(config.DRAIN_WINDOW_MS, Math.floor(config.SHUTDOWN_TIMEOUT_MS / 2))

closeWithGrace({
  delay: config.SHUTDOWN_TIMEOUT_MS,
  logger: {
    error: (problem: unknown) => {
      if (problem instanceof Error) app.log.error({ err: problem }, 'shutdown failed')
      else app.log.error(String(problem))
    }
  }
}, async ({ signal, err }) => {
  // SIGTERM/SIGINT: /ready turns 503, new sockets get 1012, open ones get 1012 spread over the window;
  // a crash closes at once. Then app.close() lets in-flight requests finish and closes the bus.
  if (err !== undefined) app.log.error({ err }, 'fatal error: shutting down')
  else app.log.info({ signal, drainWindowMs, sockets: app.sockets.hub.size }, 'shutting down')
  await app.sockets.drain(err === undefined ? drainWindowMs : 0)
  await app.close()
  app.log.info('shut down')
})

const address = await app.listen({ port: config.PORT, host: config.HOST })
if (config.DEMO) process.stdout.write(`relay: DEMO=true: customer widget and operator console at ${address}/demo/ (demo tokens for anyone: never expose it)\n`)
