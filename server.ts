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

closeWithGrace({ delay: config.SHUTDOWN_TIMEOUT_MS }, async ({ signal, err }) => {
  if (err !== undefined) app.log.error({ err }, 'fatal error: shutting down')
  else app.log.info({ signal }, 'draining')
  await app.sessions.drain(config.DRAIN_WINDOW_MS)
  await app.close()
})

await app.listen({ port: config.PORT, host: config.HOST })
