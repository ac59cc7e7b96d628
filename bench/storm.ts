import { fork, type ChildProcess } from 'node:child_process'
import { Redis } from 'ioredis'
import type { CaseResult } from './bench.js'
import { cpuSeconds } from './proc.js'
import { currentRuntime, startRedis, startServer, stop, type RedisProcess, type Runtime, type ServerProcess } from './processes.js'
import { API_TOKEN, JWT_SECRET, relayEnv } from './relay-env.js'
import { scenario, systemsFor, type BenchOptions, type SystemName } from './scenarios.js'
import type { StormAnswer, StormRequest, StormResult, StormSystem } from './storm-tally.js'

/**
 * Scenario (f), a reconnect storm. Per system: a fresh private redis-server, nodes A and B on it, one
 * driver holding every client on A. The driver posts to B at the fixed rate; after a warm-up A gets
 * SIGTERM and drains (closes its sockets spread over the window), every client comes back on B asking
 * to recover; posting goes on until all are back and a tail after, then the driver waits for quiet and
 * counts what each client is owed, got, got twice, and when it caught up.
 */

const wallClock = (): number => performance.timeOrigin + performance.now()
const delay = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))
/** Every client back on B within this, or the case reports who is not. */
const RECONNECT_DEADLINE_MS = 60_000

/** The driver child and its one-request-at-a-time conversation. */
class StormLink {
  readonly #child: ChildProcess
  readonly #answers: StormAnswer[] = []
  #waiting: ((answer: StormAnswer) => void) | undefined
  #exit: string | undefined

  constructor (script: URL, runtime: Runtime) {
    this.#child = fork(script.pathname, [], { execArgv: runtime.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    this.#child.on('message', (answer: StormAnswer) => {
      if (this.#waiting === undefined) this.#answers.push(answer)
      else this.#waiting(answer)
    })
    this.#child.once('exit', (code, signal) => {
      this.#exit = `storm driver exited (${code ?? signal ?? '?'})`
      this.#waiting?.({ op: 'error', message: this.#exit })
    })
  }

  async next (): Promise<StormAnswer> {
    const queued = this.#answers.shift()
    if (queued !== undefined) return queued
    if (this.#exit !== undefined) return { op: 'error', message: this.#exit }
    return await new Promise((resolve) => {
      this.#waiting = (answer) => {
        this.#waiting = undefined
        resolve(answer)
      }
    })
  }

  async ask<Op extends StormAnswer['op']> (request: StormRequest, op: Op): Promise<Extract<StormAnswer, { op: Op }>> {
    if (this.#exit === undefined) this.#child.send(request)
    const answer = await this.next()
    if (answer.op === 'error') throw new Error(answer.message)
    if (answer.op !== op) throw new Error(`storm driver answered ${answer.op} to ${request.op}`)
    return answer as Extract<StormAnswer, { op: Op }>
  }

  async close (): Promise<void> {
    if (this.#exit !== undefined) return
    const exited = new Promise<void>((resolve) => this.#child.once('exit', () => resolve()))
    this.#child.send({ op: 'exit' })
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(timer)
  }
}

/** A counter of the relay's GET /metrics (summed over its labels); NaN for a server without it. */
async function counter (port: number, name: string): Promise<number> {
  const text = await fetch(`http://127.0.0.1:${port}/metrics`).then(async (response) => await response.text(), () => '')
  const values = text.split('\n').filter((line) => line.startsWith(`${name} `) || line.startsWith(`${name}{`)).map((line) => Number(line.split(' ').pop()))
  return values.length === 0 ? Number.NaN : values.reduce((sum, value) => sum + value, 0)
}

/** used_cpu_sys + used_cpu_user of the redis-server, from INFO CPU. */
export async function redisCpuSeconds (redis: Redis): Promise<number> {
  const info = await redis.info('cpu')
  const field = (name: string): number => Number(new RegExp(`^${name}:([0-9.]+)`, 'm').exec(info)?.[1] ?? Number.NaN)
  return field('used_cpu_sys') + field('used_cpu_user')
}

class StormCase {
  readonly runtime = currentRuntime(import.meta.url)
  readonly servers: ServerProcess[] = []
  redis: RedisProcess | undefined
  link: StormLink | undefined
  info: Redis | undefined

  constructor (readonly system: StormSystem, readonly options: BenchOptions, readonly log: (line: string) => void) {}

  script (path: string): URL {
    return new URL(`${path}${this.runtime.extension}`, import.meta.url)
  }

  /** Both nodes get the same environment (one REDIS_PREFIX: relayEnv() names a fresh one per call). */
  nodeEnv (redisUrl: string): Record<string, string> {
    const drain = String(this.options.stormDrainMs)
    if (this.system !== 'relay') return { REDIS_URL: redisUrl, DRAIN_WINDOW_MS: drain }
    // The drain gets at most half of SHUTDOWN_TIMEOUT_MS (server.ts): give it room for the whole window.
    return { ...relayEnv(), REDIS_URL: redisUrl, DRAIN_WINDOW_MS: drain, SHUTDOWN_TIMEOUT_MS: String(this.options.stormDrainMs * 2 + 5000) }
  }

  async startNode (env: Record<string, string>): Promise<ServerProcess> {
    const script = this.system === 'relay' ? this.script('../server') : this.script('./servers/socketio-recovery')
    const { server, ready } = await startServer(script, this.runtime, env)
    this.servers.push(server)
    if (this.system === 'relay' && !ready.includes('"redis"')) throw new Error('the relay ignored REDIS_URL (GET /ready names no Redis bus)')
    return server
  }

  async run (): Promise<StormResult> {
    const { options, log, system } = this
    this.redis = await startRedis()
    this.info = new Redis(this.redis.url)
    const env = this.nodeEnv(this.redis.url)
    const nodeA = await this.startNode(env)
    const nodeB = await this.startNode(env)
    const link = this.link = new StormLink(this.script('./storm-driver'), this.runtime)
    const hello = await link.next()
    if (hello.op !== 'ready') throw new Error(`storm driver did not start: ${hello.op === 'error' ? hello.message : hello.op}`)
    await link.ask({
      op: 'init',
      init: {
        system, portA: nodeA.port, portB: nodeB.port, clients: options.stormClients, chats: options.stormChats, rate: options.stormRate,
        connectConcurrency: options.connectConcurrency, apiToken: API_TOKEN, jwtSecret: JWT_SECRET
      }
    }, 'inited')
    const connectStarted = performance.now()
    const connected = await link.ask({ op: 'connect' }, 'connected')
    if (connected.failed > 0) throw new Error(`${connected.failed} of ${connected.clients} clients could not connect to node A (first: ${connected.firstError ?? '?'})`)
    log(`  ${system}: ${connected.clients} clients on node A in ${((performance.now() - connectStarted) / 1000).toFixed(1)} s`)

    const redisBefore = await redisCpuSeconds(this.info)
    await link.ask({ op: 'post-start' }, 'posting')
    await delay(options.stormWarmupSeconds * 1000)
    const sigtermAt = wallClock()
    const nodeBCpuBefore = cpuSeconds(nodeB.pid)
    const stopped = nodeA.stop().then(() => wallClock())
    let status = await link.ask({ op: 'status' }, 'status')
    while (status.reconnected < connected.clients && wallClock() - sigtermAt < RECONNECT_DEADLINE_MS) {
      await delay(200)
      status = await link.ask({ op: 'status' }, 'status')
    }
    const nodeBCpuSeconds = cpuSeconds(nodeB.pid) - nodeBCpuBefore
    log(`  ${system}: ${status.moved} closed by node A, ${status.reconnected} back on node B after ${((wallClock() - sigtermAt) / 1000).toFixed(1)} s`)
    const exitedAt = await stopped
    await delay(options.stormTailSeconds * 1000)
    const posted = await link.ask({ op: 'post-stop' }, 'posted')
    if (posted.errors > 0) log(`  ${system}: ${posted.errors} POSTs failed (${posted.firstError ?? '?'})`)
    const { figures } = await link.ask({ op: 'settle', idleMs: options.drainIdleMs, deadlineMs: 60_000 }, 'settled')
    const settledAt = wallClock()
    const replayedFrames = system === 'relay' ? await counter(nodeB.port, 'relay_replayed_frames_total') : Number.NaN
    const redisCpu = await redisCpuSeconds(this.info) - redisBefore
    const since = (at: number): number => (at - sigtermAt) / 1000
    return {
      ...figures,
      chats: options.stormChats,
      rate: options.stormRate,
      drainWindowMs: options.stormDrainMs,
      postErrors: posted.errors,
      secondsObserved: since(settledAt),
      secondsToReconnect: since(figures.lastReconnectedAt),
      secondsToCatchUp: since(figures.lastCaughtUpAt),
      secondsToExit: since(exitedAt),
      nodeBCpuSeconds,
      replayedFrames,
      redisCpuSeconds: redisCpu,
      redisMicrosPerEvent: figures.posted > 0 ? redisCpu / figures.posted * 1e6 : Number.NaN
    }
  }

  async close (): Promise<void> {
    await this.link?.close()
    await Promise.all(this.servers.map(async (server) => await server.stop()))
    this.info?.disconnect()
    if (this.redis !== undefined) await stop(this.redis.child)
  }
}

function emptyResult (system: SystemName, options: BenchOptions): CaseResult {
  const plan = scenario('f', options)
  return {
    scenario: 'f', title: plan.title, system, nodes: 2, clients: options.stormClients, messages: 0, expected: 0, received: 0, lost: 0, extra: 0,
    closes: {}, postErrors: 0, seconds: 0, deliveriesPerSecond: 0, cpuMicrosPerDelivery: Number.NaN,
    latency: { count: 0, p50: Number.NaN, p99: Number.NaN, max: Number.NaN }, driverCpuSeconds: 0
  }
}

/** (f) for each of its systems in turn; a case that cannot run says why in its `error`. */
export async function runStorm (options: BenchOptions, log: (line: string) => void): Promise<CaseResult[]> {
  const results: CaseResult[] = []
  log(scenario('f', options).title)
  for (const system of systemsFor('f', options)) {
    const base = emptyResult(system, options)
    const run = new StormCase(system === 'relay' ? 'relay' : 'socketio', options, log)
    try {
      const storm = await run.run()
      log(`  ${system}: all caught up ${storm.secondsToCatchUp.toFixed(2)} s after SIGTERM, lost ${storm.lost}, duplicates ${storm.duplicates}, ` +
        `recovered ${storm.recoveredTrue}/${storm.reconnected}, Redis ${storm.redisMicrosPerEvent.toFixed(0)} µs CPU/event`)
      results.push({
        ...base, messages: storm.posted, expected: storm.owed, received: storm.received, lost: storm.lost, extra: storm.duplicates,
        closes: storm.closes, postErrors: storm.postErrors, seconds: storm.secondsToCatchUp, driverCpuSeconds: storm.driverCpuSeconds, storm
      })
    } catch (error) {
      const output = run.servers.map((server) => server.output()).join('\n').trim()
      log(`  ${system}: ${(error as Error).message}${output === '' ? '' : `\n  server output: ${output.slice(-1000)}`}`)
      results.push({ ...base, error: (error as Error).message.split('\n')[0] as string })
    } finally {
      await run.close()
    }
  }
  return results
}
