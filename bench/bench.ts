import { randomBytes } from 'node:crypto'
import type { LatencySummary } from './messages.js'
import { rssBytes, totalCpuSeconds } from './proc.js'
import {
  currentRuntime, DriverProcess, InProcessDriver, startRedis, startServer, stop, type DriverLink, type RedisProcess, type Runtime, type ServerProcess
} from './processes.js'
import { clientCount, scenario, WIRE, type BenchOptions, type Scenario, type ScenarioName, type SystemName } from './scenarios.js'

/**
 * One benchmark invocation: for each scenario, each system in turn on fresh server processes, measured
 * by the same two driver processes (prober: posts and samples latency; counter: counts the rest).
 * Server CPU comes from /proc of the server processes over the posting window.
 */

export interface CaseResult {
  scenario: ScenarioName
  title: string
  system: SystemName
  nodes: number
  clients: number
  messages: number
  expected: number
  received: number
  lost: number
  /** Deliveries to clients that should not get them (a routing error). */
  extra: number
  closes: Record<string, number>
  postErrors: number
  seconds: number
  deliveriesPerSecond: number
  /** Server processes' CPU (utime + stime) over the run, per delivery, µs. */
  cpuMicrosPerDelivery: number
  redisMicrosPerDelivery?: number
  latency: LatencySummary
  /** RSS growth per idle connection, after a full collection. */
  bytesPerConnection?: number
  /** Heap (used + external) growth per idle connection, after a full collection. */
  heapBytesPerConnection?: number
  driverCpuSeconds: number
  /** Set when the case could not run; the other fields are then zero. */
  error?: string
  rate?: number
}

const API_TOKEN = `bench-${randomBytes(8).toString('hex')}`
const JWT_SECRET = randomBytes(24).toString('base64url')

interface Cluster {
  servers: ServerProcess[]
  pids: number[]
}

class Bench {
  readonly runtime: Runtime = currentRuntime(import.meta.url)
  redis: RedisProcess | undefined

  constructor (readonly options: BenchOptions, readonly log: (line: string) => void) {}

  script (path: string): URL {
    return new URL(`${path}${this.runtime.extension}`, import.meta.url)
  }

  async startCluster (system: SystemName, nodes: number, idle = false): Promise<Cluster> {
    const env: Record<string, string> = {}
    if (nodes > 1) {
      this.redis ??= await startRedis()
      env.REDIS_URL = this.redis.url
    }
    const script = system === 'relay' ? this.script('../server') : this.script(system === 'socketio' ? './servers/socketio' : './servers/raw-ws')
    if (system === 'wsCorked') env.CORK_PER_TURN = '1'
    if (system === 'relay') {
      Object.assign(env, {
        NODE_ENV: 'production',
        HOST: '127.0.0.1',
        API_TOKEN,
        JWT_SECRET,
        LOG_LEVEL: 'warn',
        REDIS_PREFIX: `bench-${randomBytes(4).toString('hex')}:`,
        DRAIN_WINDOW_MS: '0',
        SHUTDOWN_TIMEOUT_MS: '5000'
      })
    }
    const flags = idle
      ? ['--expose-gc', '--import', this.script('./servers/gc-on-signal').href]
      : system === 'relay' && this.options.profileDir !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${this.options.profileDir}`] : []
    const start = system === 'relay' && this.options.relayInProcess === true
      ? async () => await startRelayInProcess(env)
      : async () => await startServer(script, this.runtime, env, flags)
    const started = await Promise.allSettled(Array.from({ length: nodes }, start))
    const servers = started.flatMap((outcome) => outcome.status === 'fulfilled' ? [outcome.value.server] : [])
    const failure = started.find((outcome): outcome is PromiseRejectedResult => outcome.status === 'rejected')
    const ignoredRedis = system === 'relay' && nodes > 1 &&
      started.some((outcome) => outcome.status === 'fulfilled' && !outcome.value.ready.includes('"redis"'))
    if (failure !== undefined || ignoredRedis) {
      await Promise.all(servers.map(async (server) => await server.stop()))
      if (failure !== undefined) throw failure.reason
      throw new Error('the relay ignored REDIS_URL (GET /ready names no Redis bus): no 2-node row')
    }
    return { servers, pids: servers.map((server) => server.pid) }
  }

  async run (system: SystemName, plan: Scenario): Promise<CaseResult> {
    const clients = clientCount(plan.workload)
    const base: CaseResult = {
      scenario: plan.name, title: plan.title, system, nodes: plan.nodes, clients, messages: plan.workload.messages,
      expected: 0, received: 0, lost: 0, extra: 0, closes: {}, postErrors: 0, seconds: 0, deliveriesPerSecond: 0,
      cpuMicrosPerDelivery: 0, latency: { count: 0, p50: Number.NaN, p99: Number.NaN, max: Number.NaN }, driverCpuSeconds: 0,
      ...(plan.plan?.kind === 'rate' ? { rate: plan.plan.perSecond } : {})
    }
    let cluster: Cluster
    try {
      cluster = await this.startCluster(system, plan.nodes, plan.plan === undefined)
    } catch (error) {
      return { ...base, error: (error as Error).message.split('\n')[0] as string }
    }
    const drivers: DriverLink[] = []
    try {
      return await this.measure(base, cluster, plan, drivers)
    } catch (error) {
      const output = cluster.servers.map((server) => server.output()).join('\n').trim()
      this.log(`  ${system}: ${(error as Error).message}${output === '' ? '' : `\n  server output: ${output.slice(-1000)}`}`)
      return { ...base, error: (error as Error).message.split('\n')[0] as string }
    } finally {
      await Promise.all(drivers.map(async (driver) => await driver.close()))
      await Promise.all(cluster.servers.map(async (server) => await server.stop()))
    }
  }

  async measure (base: CaseResult, cluster: Cluster, plan: Scenario, drivers: DriverLink[]): Promise<CaseResult> {
    const { options } = this
    const { clients, system } = base
    const split = options.sampleEvery > 1 && clients > 1
    for (const role of split ? ['prober', 'counter'] as const : ['prober'] as const) {
      const driver = options.driverInProcess === true ? new InProcessDriver() : new DriverProcess(this.script('./driver'), this.runtime)
      drivers.push(driver)
      const hello = await driver.next()
      if (hello.op !== 'ready') throw new Error(`driver did not start: ${hello.op === 'error' ? hello.message : hello.op}`)
      await driver.ask({
        op: 'init',
        init: {
          role,
          system: WIRE[system],
          workload: plan.workload,
          ports: cluster.servers.map((server) => server.port),
          sampleEvery: split ? options.sampleEvery : 1,
          connectConcurrency: options.connectConcurrency,
          apiToken: API_TOKEN,
          jwtSecret: JWT_SECRET
        }
      }, 'inited')
    }
    const connectStart = Date.now()
    if (plan.plan === undefined) {
      // Memory per idle connection: the growth from half the clients to all of them, each reading taken
      // after a settle and a full collection, so neither start-up slack in a server's heap nor garbage
      // not yet collected favours anybody.
      const half = Math.floor(clients / 2)
      await this.connect(drivers, 0, half)
      await delay(options.idleSettleMs)
      const atHalf = await memoryAfterGc(cluster.servers)
      await this.connect(drivers, half, clients)
      this.log(`  ${system}: ${clients} clients subscribed in ${((Date.now() - connectStart) / 1000).toFixed(1)} s`)
      await delay(options.idleSettleMs)
      const atFull = await memoryAfterGc(cluster.servers)
      const added = clients - half
      return { ...base, bytesPerConnection: (atFull.rss - atHalf.rss) / added, heapBytesPerConnection: (atFull.heap - atHalf.heap) / added }
    }
    await this.connect(drivers, 0, clients)
    this.log(`  ${system}: ${clients} clients subscribed in ${((Date.now() - connectStart) / 1000).toFixed(1)} s`)

    // Connection-time work (presence, user_connected) is over before the clock starts.
    await delay(500)
    for (const driver of [...drivers].reverse()) await driver.ask({ op: 'arm' }, 'armed')
    const redisPid = plan.nodes > 1 ? this.redis?.pid : undefined
    const cpuBefore = totalCpuSeconds(cluster.pids)
    const redisBefore = redisPid === undefined ? 0 : totalCpuSeconds([redisPid])
    const prober = drivers[0] as DriverLink
    const posted = await prober.ask({ op: 'post', plan: plan.plan }, 'posted')
    const drained = await Promise.all(drivers.map(async (driver) =>
      await driver.ask({ op: 'drain', idleMs: options.drainIdleMs, deadlineMs: 180_000 }, 'drained')))
    const cpu = totalCpuSeconds(cluster.pids) - cpuBefore
    const redisCpu = redisPid === undefined ? undefined : totalCpuSeconds([redisPid]) - redisBefore

    const sum = (field: 'expected' | 'received' | 'lost' | 'extra' | 'cpuSeconds'): number =>
      drained.reduce((total, answer) => total + answer[field], 0)
    const received = sum('received')
    const lastDeliveryAt = Math.max(...drained.map((answer) => answer.lastDeliveryAt).filter((at) => !Number.isNaN(at)))
    const seconds = Math.max(0.001, (lastDeliveryAt - posted.firstPostAt) / 1000)
    const closes: Record<string, number> = {}
    for (const answer of drained) for (const [code, count] of Object.entries(answer.closes)) closes[code] = (closes[code] ?? 0) + count
    const lost = sum('lost')
    if (posted.errors > 0) this.log(`  ${system}: ${posted.errors} POSTs failed (${posted.firstError ?? '?'})`)
    return {
      ...base,
      expected: sum('expected'),
      received,
      lost,
      extra: sum('extra'),
      closes,
      postErrors: posted.errors,
      seconds,
      deliveriesPerSecond: received / seconds,
      cpuMicrosPerDelivery: received > 0 ? cpu / received * 1e6 : Number.NaN,
      ...(redisCpu === undefined ? {} : { redisMicrosPerDelivery: received > 0 ? redisCpu / received * 1e6 : Number.NaN }),
      latency: (drained[0] as (typeof drained)[number]).latency,
      driverCpuSeconds: sum('cpuSeconds')
    }
  }

  /** Opens clients [from, to) in rounds, alternating prober and counter, so samplers are spread in join order. */
  async connect (drivers: DriverLink[], from: number, to: number): Promise<void> {
    const count = to - from
    const phases = Math.max(1, Math.min(this.options.connectPhases, count))
    let failed = 0
    let firstError: string | undefined
    for (let phase = 0; phase < phases; phase++) {
      const start = from + Math.floor(phase * count / phases)
      const end = from + Math.floor((phase + 1) * count / phases)
      for (const driver of drivers) {
        const answer = await driver.ask({ op: 'connect', from: start, to: end }, 'connected')
        failed += answer.failed
        firstError ??= answer.firstError
      }
    }
    if (failed > 0) throw new Error(`${failed} of ${count} clients could not subscribe (first: ${firstError ?? '?'})`)
  }

  async close (): Promise<void> {
    if (this.redis !== undefined) await stop(this.redis.child)
    this.redis = undefined
  }
}

/** The relay built in this process (the smoke test: no TypeScript start-up of server.ts per node). */
async function startRelayInProcess (env: Record<string, string>): Promise<{ server: ServerProcess, ready: string }> {
  const [{ buildApp }, { loadConfig }] = await Promise.all([import('../app.js'), import('../src/config.js')])
  const app = await buildApp({ config: loadConfig({ ...env, PORT: '0' }) })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  const server: ServerProcess = { pid: process.pid, port, output: () => '', stop: async () => { await app.close() } }
  return { server, ready: JSON.stringify({ bus: app.stores.bus.kind }) }
}

/**
 * Every server's memory after a full collection (SIGWINCH to the preload in servers/gc-on-signal.ts):
 * RSS read from /proc, and the heap the process reports (used heap plus external buffers).
 */
async function memoryAfterGc (servers: ServerProcess[]): Promise<{ rss: number, heap: number }> {
  const reports = await Promise.all(servers.map(async (server) => {
    const before = server.output().split('bench-memory ').length
    if (server.pid === process.pid) return { rss: rssBytes(server.pid), heap: process.memoryUsage().heapUsed }
    process.kill(server.pid, 'SIGWINCH')
    const deadline = Date.now() + 10_000
    while (server.output().split('bench-memory ').length === before) {
      if (Date.now() > deadline) throw new Error('the server did not report its memory after SIGWINCH')
      await delay(20)
    }
    await delay(200)
    const line = server.output().split('bench-memory ').pop()?.split('\n')[0] ?? '{}'
    const { heapUsed, external } = JSON.parse(line) as { heapUsed: number, external: number }
    return { rss: rssBytes(server.pid), heap: heapUsed + external }
  }))
  return reports.reduce((sum, report) => ({ rss: sum.rss + report.rss, heap: sum.heap + report.heap }), { rss: 0, heap: 0 })
}

async function delay (ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms))
}

/** The interval-halving search of (c): the rate at which raw ws finishes each fan-out well within the interval. */
function sustains (result: CaseResult, rate: number): boolean {
  return result.error === undefined && result.lost === 0 && result.latency.p99 <= 1000 / rate / 2
}

/** Runs the selected scenarios and systems; `log` gets progress lines as they happen. */
export async function runBench (options: BenchOptions, log: (line: string) => void = () => {}): Promise<CaseResult[]> {
  const bench = new Bench(options, log)
  const results: CaseResult[] = []
  try {
    for (const name of options.scenarios) {
      let rate = options.rate
      const systems = [...options.systems]
      if (name === 'c' && systems.includes('ws')) {
        // The fixed rate is one that raw ws sustains without queueing: find it first.
        systems.splice(systems.indexOf('ws'), 1)
        for (;;) {
          const plan = scenario(name, options, rate)
          log(`${plan.title}`)
          const floor = await bench.run('ws', plan)
          const last = !options.findRate || rate <= 1 || sustains(floor, rate)
          log(`  ws at ${rate}/s: p99 ${floor.latency.p99.toFixed(2)} ms, lost ${floor.lost}${last ? '' : ' → queueing; halving the rate'}`)
          results.push(floor)
          if (last) break
          rate = Math.max(1, Math.floor(rate / 2))
        }
      }
      const plan = scenario(name, options, rate)
      log(plan.title)
      for (const system of systems) {
        const result = await bench.run(system, plan)
        log(`  ${system}: ${describe(result)}`)
        results.push(result)
      }
    }
  } finally {
    await bench.close()
  }
  return results
}

function describe (result: CaseResult): string {
  if (result.error !== undefined) return `not run: ${result.error}`
  if (result.bytesPerConnection !== undefined) return `${Math.round(result.bytesPerConnection)} bytes per idle connection`
  return `${Math.round(result.deliveriesPerSecond)} deliveries/s, ${result.cpuMicrosPerDelivery.toFixed(2)} µs CPU/delivery, ` +
    `p99 ${result.latency.p99.toFixed(1)} ms, lost ${result.lost}`
}
