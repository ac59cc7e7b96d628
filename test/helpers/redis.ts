import { spawn, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from './process.js'
import type { Tap } from './relay.js'

export interface PrivateRedis {
  port: number
  url: string
  /** A fresh key prefix, so tests sharing this server never see each other's keys. */
  prefix: () => string
  /** SIGKILL: no goodbye to clients, nothing saved. Resolves once the process is gone. */
  kill: () => Promise<void>
  /** Starts it again on the same port (empty: it keeps nothing). */
  restart: () => Promise<void>
  /** SIGSTOP: connections stay open and nothing answers (a hung Redis); `resume` sends SIGCONT. */
  pause: () => void
  resume: () => void
  running: () => boolean
}

const START_TIMEOUT_MS = 10_000

/**
 * A private `redis-server` on a free port with its own temporary directory, never the shared 6379:
 * `--save '' --appendonly no`, killed (and its directory removed) in teardown.
 */
export async function startRedis (t: Tap): Promise<PrivateRedis> {
  const dir = await mkdtemp(join(tmpdir(), 'relay-redis-'))
  let port = await freePort()
  let child: ChildProcess | undefined

  async function launch (): Promise<void> {
    const process_ = spawn('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', dir, '--daemonize', 'no', '--loglevel', 'notice', '--logfile', ''
    ], { stdio: ['ignore', 'pipe', 'pipe'] })
    child = process_
    let output = ''
    await new Promise<void>((resolve, reject) => {
      const settle = (error?: Error): void => {
        clearTimeout(timer)
        process_.stdout?.off('data', onData)
        process_.off('exit', onExit)
        process_.off('error', settle)
        if (error === undefined) return resolve()
        process_.kill('SIGKILL')
        reject(error)
      }
      const onData = (chunk: Buffer): void => {
        output += chunk.toString()
        if (output.includes('Ready to accept connections')) settle()
      }
      const onExit = (code: number | null, signal: string | null): void => {
        settle(new Error(`redis-server exited (${code ?? signal ?? '?'}) on port ${port}: ${output}`))
      }
      const timer = setTimeout(() => settle(new Error(`redis-server did not start within ${START_TIMEOUT_MS} ms: ${output}`)), START_TIMEOUT_MS)
      process_.stdout?.on('data', onData)
      process_.stderr?.on('data', (chunk: Buffer) => { output += chunk.toString() })
      process_.once('exit', onExit)
      process_.once('error', settle)
    })
    // Keep reading so a full pipe never blocks the server.
    process_.stdout?.resume()
  }

  async function kill (): Promise<void> {
    const process_ = child
    child = undefined
    if (process_ === undefined || process_.exitCode !== null || process_.signalCode !== null) return
    const exited = new Promise<void>((resolve) => process_.once('exit', () => resolve()))
    process_.kill('SIGKILL')
    await exited
  }

  try {
    await launch()
  } catch (error) {
    // Another process took the port between asking and binding: one more try on a fresh one.
    port = await freePort()
    await launch().catch((retryError: unknown) => { throw new AggregateError([error, retryError], 'redis-server did not start') })
  }
  t.teardown(async () => {
    await kill()
    await rm(dir, { recursive: true, force: true })
  })
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    prefix: () => `test-${randomUUID().slice(0, 8)}:`,
    kill,
    restart: async () => {
      await kill()
      await launch()
    },
    pause: () => { child?.kill('SIGSTOP') },
    resume: () => { child?.kill('SIGCONT') },
    running: () => child !== undefined && child.exitCode === null && child.signalCode === null
  }
}
