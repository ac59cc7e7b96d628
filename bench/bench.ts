import type { LatencySummary } from './messages.js'
import { rssBytes, totalCpuSeconds } from './proc.js'
import { API_TOKEN, JWT_SECRET, relayEnv } from './relay-env.js'
import {
  currentRuntime, DriverProcess, InProcessDriver, startRedis, startRedisCluster, startServer, stop,
  type DriverLink, type RedisClusterProcesses, type RedisProcess, type Runtime, type ServerProcess
} from './processes.js'
import type { DriverAnswer, PostPlan } from './messages.js'
import { Redis } from 'ioredis'
import { redisCpuSeconds, runStorm } from './storm.js'
import type { StormResult } from './storm-tally.js'
import {
  clientCount, DEFAULT_REDIS_MODES, REDIS_MODE_ACKS, REDIS_MODE_LABEL, scenario, scenarioCases, systemsFor, WIRE,
  type BenchOptions, type RedisMode, type Scenario, type ScenarioName, type SystemName
} from './scenarios.js'

/**
 * One benchmark invocation: for each scenario, each system in turn on fresh server processes, measured
 * by the same driver processes (prober: posts and samples latency; counter: counts the rest; (g) has
 * several counters). Server CPU comes from /proc of the server processes over the posting window.
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
  /** The same CPU in seconds, over the posting window and the drain. */
  serverCpuSeconds?: number
  /** (h): messages per POST /batch; absent: one POST /message each. */
  eventsPerRequest?: number
  redisMicrosPerDelivery?: number
  /** The same Redis CPU per event posted (`messages`), µs. On a cluster: all six nodes. */
  redisMicrosPerEvent?: number
  /** On a cluster: the part of redisMicrosPerEvent spent by the three replicas. */
  redisReplicaMicrosPerEvent?: number
  /** With --redis-modes, on the relay's multi-node cases: where its nodes met. */
  redisMode?: RedisMode
  /** With --redis-modes: WAIT commands Redis ran over the posting window and the drain (INFO commandstats). */
  redisWaits?: number
  latency: LatencySummary
  /** RSS growth per idle connection, after a full collection. */
  bytesPerConnection?: number
  /** Heap (used + external) growth per idle connection, after a full collection. */
  heapBytesPerConnection?: number
  /** Wall time to open and subscribe every client (in (d) and (g): both halves, without the pause between). */
  connectSeconds?: number
  /** Server processes' CPU over those connects, per client, µs. */
  cpuMicrosPerConnect?: number
  /** (g): the servers' RSS and heap with every client connected, after a full collection. */
  serverRssBytes?: number
  serverHeapBytes?: number
  driverCpuSeconds: number
  /** Set when the case could not run; the other fields are then zero. */
  error?: string
  rate?: number
  /** (f): the reconnect storm's own figures (bench/storm.ts). */
  storm?: StormResult
}

interface Cluster {
  servers: ServerProcess[]
  pids: number[]
  /** INFO CPU of the Redis the nodes meet through (seconds; on a cluster, the sum over all nodes and over the replicas). */
  redisCpu?: () => Promise<{ total: number, replicas?: number }>
  /** WAIT commands run so far (INFO commandstats, summed over every node). */
  redisWaits?: () => Promise<number>
}

/** Calls of WAIT so far on one Redis (0 before its first). */
async function waitCalls (redis: Redis): Promise<number> {
  return Number(/^cmdstat_wait:calls=(\d+)/m.exec(await redis.info('commandstats'))?.[1] ?? 0)
}

/**
 * Where (g)'s clients connect from: Linux routes all of 127.0.0.0/8 to lo, and each source address has
 * its own ephemeral ports, so 50,000 sockets to one server port do not run out of them. Each case takes a
 * fresh block (127.0.<round>.2 and up): the previous case's client ports sit in TIME_WAIT for a minute,
 * and binding a source address skips them.
 */
export function loopbackSources (count: number, round: number): string[] {
  if (process.platform !== 'linux') return ['127.0.0.1']
  return Array.from({ length: count }, (_, index) => `127.0.${round % 256}.${2 + index}`)
}

class Bench {
  readonly runtime: Runtime = currentRuntime(import.meta.url)
  redis: RedisProcess | undefined
  /** Reads the private redis-server's CPU (INFO CPU, µs resolution; /proc counts 10 ms ticks). */
  redisInfo: Redis | undefined
  /** The private Redis Cluster (--redis-modes cluster…), started on first use and kept for the run. */
  redisCluster: RedisClusterProcesses | undefined
  /** One plain connection per cluster node, for INFO; `replica` as created. */
  clusterInfo: Array<{ client: Redis, replica: boolean }> | undefined
  /** (g) cases run so far: each connects from its own block of loopback addresses. */
  scaleRounds = 0

  constructor (readonly options: BenchOptions, readonly log: (line: string) => void) {}

  script (path: string): URL {
    return new URL(`${path}${this.runtime.extension}`, import.meta.url)
  }

  /** `memory`: the servers collect and report their memory on SIGWINCH (see memoryAfterGc). */
  async startCluster (system: SystemName, nodes: number, memory = false, mode?: RedisMode): Promise<Cluster> {
    const env: Record<string, string> = {}
    const measured: Pick<Cluster, 'redisCpu' | 'redisWaits'> = {}
    if (nodes > 1 && system === 'relay' && mode !== undefined && mode !== 'single') {
      if (this.redisCluster === undefined) {
        const started = performance.now()
        this.redisCluster = await startRedisCluster()
        this.log(`  Redis Cluster of 3 masters + 3 replicas ready in ${((performance.now() - started) / 1000).toFixed(1)} s: masters ${this.redisCluster.mastersEnv}`)
      }
      const cluster = this.redisCluster
      const info = this.clusterInfo ??= cluster.nodes.map((node) => ({ client: new Redis(node.url), replica: cluster.replicas.includes(node) }))
      env.REDIS_CLUSTER_NODES = cluster.mastersEnv
      measured.redisCpu = async () => {
        const each = await Promise.all(info.map(async ({ client, replica }) => ({ replica, cpu: await redisCpuSeconds(client) })))
        return { total: each.reduce((sum, node) => sum + node.cpu, 0), replicas: each.reduce((sum, node) => sum + (node.replica ? node.cpu : 0), 0) }
      }
      measured.redisWaits = async () => (await Promise.all(info.map(async ({ client }) => await waitCalls(client)))).reduce((sum, calls) => sum + calls, 0)
    } else if (nodes > 1) {
      this.redis ??= await startRedis()
      const info = this.redisInfo ??= new Redis(this.redis.url)
      env.REDIS_URL = this.redis.url
      measured.redisCpu = async () => ({ total: await redisCpuSeconds(info) })
      measured.redisWaits = async () => await waitCalls(info)
    }
    if (nodes > 1 && system === 'relay' && mode !== undefined) env.REDIS_REPLICA_ACKS = String(REDIS_MODE_ACKS[mode])
    const script = system === 'relay' ? this.script('../server') : this.script(system === 'socketio' ? './servers/socketio' : './servers/raw-ws')
    if (system === 'wsCorked') env.CORK_PER_TURN = '1'
    if (system === 'relay') Object.assign(env, relayEnv())
    const flags = [
      ...(memory ? ['--expose-gc', '--import', this.script('./servers/gc-on-signal').href] : []),
      ...(system === 'relay' && this.options.profileDir !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${this.options.profileDir}`] : [])
    ]
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
    if (system === 'relay' && nodes > 1 && mode !== undefined) {
      // GET /ready says "redis" whichever way the node reaches it: /metrics names the mode.
      const expected = mode === 'single' ? 'single' : 'cluster'
      const seen = await Promise.all(servers.map(async (server) => await redisModeOf(server.port)))
      if (seen.some((modeSeen) => modeSeen !== expected)) {
        await Promise.all(servers.map(async (server) => await server.stop()))
        throw new Error(`the relay did not run on ${REDIS_MODE_LABEL[mode]}: GET /metrics says relay_redis_info mode ${seen.join(', ')}, not ${expected}`)
      }
    }
    return { servers, pids: servers.map((server) => server.pid), ...measured }
  }

  async run (system: SystemName, plan: Scenario, mode?: RedisMode): Promise<CaseResult> {
    const clients = clientCount(plan.workload)
    const base: CaseResult = {
      scenario: plan.name, title: plan.title, system, nodes: plan.nodes, clients, messages: plan.workload.messages,
      expected: 0, received: 0, lost: 0, extra: 0, closes: {}, postErrors: 0, seconds: 0, deliveriesPerSecond: 0,
      cpuMicrosPerDelivery: 0, latency: { count: 0, p50: Number.NaN, p99: Number.NaN, max: Number.NaN }, driverCpuSeconds: 0,
      ...(plan.plan?.kind === 'rate' ? { rate: plan.plan.perSecond } : {}),
      ...(plan.plan?.kind === 'batch' ? { eventsPerRequest: plan.plan.size } : {}),
      ...(mode === undefined ? {} : { redisMode: mode })
    }
    let cluster: Cluster
    try {
      cluster = await this.startCluster(system, plan.nodes, plan.plan === undefined || plan.scale !== undefined, mode)
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
    await this.startDrivers(system, cluster, plan, drivers)
    const together = plan.scale !== undefined
    if (plan.plan === undefined || plan.scale !== undefined) {
      // Memory per connection: the growth from half the clients to all of them, each reading taken
      // after a settle and a full collection, so neither start-up slack in a server's heap nor garbage
      // not yet collected favours anybody.
      const half = Math.floor(clients / 2)
      const firstHalf = await this.connect(drivers, 0, half, together, cluster)
      await delay(options.idleSettleMs)
      const atHalf = await memoryAfterGc(cluster.servers)
      const secondHalf = await this.connect(drivers, half, clients, together, cluster)
      const connectSeconds = firstHalf.seconds + secondHalf.seconds
      this.log(`  ${system}: ${clients} clients subscribed in ${connectSeconds.toFixed(1)} s`)
      await delay(options.idleSettleMs)
      const atFull = await memoryAfterGc(cluster.servers)
      const added = clients - half
      const memory = {
        connectSeconds,
        cpuMicrosPerConnect: (firstHalf.cpuSeconds + secondHalf.cpuSeconds) / clients * 1e6,
        bytesPerConnection: (atFull.rss - atHalf.rss) / added,
        heapBytesPerConnection: (atFull.heap - atHalf.heap) / added
      }
      if (plan.plan === undefined) return { ...base, ...memory }
      this.log(`  ${system}: RSS ${(atFull.rss / 2 ** 20).toFixed(0)} MiB, heap ${(atFull.heap / 2 ** 20).toFixed(0)} MiB with every client connected`)
      return { ...await this.deliver(base, cluster, plan.plan, drivers), ...memory, serverRssBytes: atFull.rss, serverHeapBytes: atFull.heap }
    }
    const connected = await this.connect(drivers, 0, clients, together, cluster)
    this.log(`  ${system}: ${clients} clients subscribed in ${connected.seconds.toFixed(1)} s`)
    return { ...await this.deliver(base, cluster, plan.plan, drivers), connectSeconds: connected.seconds, cpuMicrosPerConnect: connected.cpuSeconds / clients * 1e6 }
  }

  /** The prober (posts, owns the sampling clients) and the counters (the rest, shared out in (g)). */
  async startDrivers (system: SystemName, cluster: Cluster, plan: Scenario, drivers: DriverLink[]): Promise<void> {
    const { options } = this
    const clients = clientCount(plan.workload)
    const split = options.sampleEvery > 1 && clients > 1
    const counters = split ? plan.scale?.drivers ?? 1 : 0
    const sourceAddresses = plan.scale === undefined ? undefined : loopbackSources(plan.scale.addresses, this.scaleRounds++)
    const roles = [{ role: 'prober' as const }, ...Array.from({ length: counters }, (_, index) => ({
      role: 'counter' as const,
      ...(counters > 1 ? { shard: { index, count: counters } } : {})
    }))]
    for (const role of roles) {
      const driver = options.driverInProcess === true ? new InProcessDriver() : new DriverProcess(this.script('./driver'), this.runtime)
      drivers.push(driver)
      const hello = await driver.next()
      if (hello.op !== 'ready') throw new Error(`driver did not start: ${hello.op === 'error' ? hello.message : hello.op}`)
      await driver.ask({
        op: 'init',
        init: {
          ...role,
          system: WIRE[system],
          workload: plan.workload,
          ports: cluster.servers.map((server) => server.port),
          sampleEvery: split ? options.sampleEvery : 1,
          connectConcurrency: options.connectConcurrency,
          ...(sourceAddresses === undefined ? {} : { sourceAddresses }),
          apiToken: API_TOKEN,
          jwtSecret: JWT_SECRET
        }
      }, 'inited')
    }
  }

  /** Arms every driver, posts the plan, waits for the drains: what was delivered, how fast, at what cost. */
  async deliver (base: CaseResult, cluster: Cluster, postPlan: PostPlan, drivers: DriverLink[]): Promise<CaseResult> {
    const { options } = this
    const { system } = base
    // Connection-time work (presence, user_connected) is over before the clock starts.
    await delay(500)
    for (const driver of [...drivers].reverse()) await driver.ask({ op: 'arm' }, 'armed')
    const waitsBefore = base.redisMode === undefined ? undefined : await cluster.redisWaits?.()
    const cpuBefore = totalCpuSeconds(cluster.pids)
    const redisBefore = await cluster.redisCpu?.()
    const prober = drivers[0] as DriverLink
    const posted = await prober.ask({ op: 'post', plan: postPlan }, 'posted')
    const drained = await Promise.all(drivers.map(async (driver) =>
      await driver.ask({ op: 'drain', idleMs: options.drainIdleMs, deadlineMs: 180_000 }, 'drained')))
    const cpu = totalCpuSeconds(cluster.pids) - cpuBefore
    const redisAfter = await cluster.redisCpu?.()
    const redisCpu = redisAfter === undefined || redisBefore === undefined ? undefined : redisAfter.total - redisBefore.total
    const replicaCpu = redisAfter?.replicas === undefined || redisBefore?.replicas === undefined ? undefined : redisAfter.replicas - redisBefore.replicas
    const waitsAfter = waitsBefore === undefined ? undefined : await cluster.redisWaits?.()
    const waits = waitsAfter === undefined || waitsBefore === undefined ? undefined : waitsAfter - waitsBefore
    if (waits !== undefined && base.redisMode !== undefined) {
      // The cost of WAIT is what the cluster rows compare: a row that did not run what it says is an error.
      const acks = REDIS_MODE_ACKS[base.redisMode]
      if ((acks > 0) !== (waits > 0)) throw new Error(`REDIS_REPLICA_ACKS=${acks} but Redis ran ${waits} WAIT commands`)
    }

    const sum = (field: 'expected' | 'received' | 'lost' | 'extra' | 'cpuSeconds'): number =>
      drained.reduce((total, answer) => total + answer[field], 0)
    const received = sum('received')
    const lastDeliveryAt = Math.max(...drained.map((answer) => answer.lastDeliveryAt).filter((at) => !Number.isNaN(at)))
    const seconds = Math.max(0.001, (lastDeliveryAt - posted.firstPostAt) / 1000)
    const closes: Record<string, number> = {}
    for (const answer of drained) for (const [code, count] of Object.entries(answer.closes)) closes[code] = (closes[code] ?? 0) + count
    if (posted.errors > 0) this.log(`  ${system}: ${posted.errors} POSTs failed (${posted.firstError ?? '?'})`)
    return {
      ...base,
      expected: sum('expected'),
      received,
      lost: sum('lost'),
      extra: sum('extra'),
      closes,
      postErrors: posted.errors,
      seconds,
      deliveriesPerSecond: received / seconds,
      cpuMicrosPerDelivery: received > 0 ? cpu / received * 1e6 : Number.NaN,
      serverCpuSeconds: cpu,
      ...(redisCpu === undefined
        ? {}
        : { redisMicrosPerDelivery: received > 0 ? redisCpu / received * 1e6 : Number.NaN, redisMicrosPerEvent: redisCpu / base.messages * 1e6 }),
      ...(replicaCpu === undefined ? {} : { redisReplicaMicrosPerEvent: replicaCpu / base.messages * 1e6 }),
      ...(waits === undefined ? {} : { redisWaits: waits }),
      latency: (drained[0] as (typeof drained)[number]).latency,
      driverCpuSeconds: sum('cpuSeconds')
    }
  }

  /**
   * Opens clients [from, to) in rounds, so samplers are spread in join order; returns the seconds it took
   * and the CPU seconds the servers spent meanwhile.
   * In a round the drivers take turns, or (`together`, for (g)) all connect at once, so that the driver
   * is not what limits how fast a node takes 50,000 sockets.
   */
  async connect (drivers: DriverLink[], from: number, to: number, together: boolean, cluster: Cluster): Promise<{ seconds: number, cpuSeconds: number }> {
    const started = performance.now()
    const cpuBefore = totalCpuSeconds(cluster.pids)
    const count = to - from
    const phases = Math.max(1, Math.min(this.options.connectPhases, count))
    let failed = 0
    let firstError: string | undefined
    const tally = (answer: Extract<DriverAnswer, { op: 'connected' }>): void => {
      failed += answer.failed
      firstError ??= answer.firstError
    }
    for (let phase = 0; phase < phases; phase++) {
      const request = { op: 'connect', from: from + Math.floor(phase * count / phases), to: from + Math.floor((phase + 1) * count / phases) } as const
      if (together) {
        const answers = await Promise.all(drivers.map(async (driver) => await driver.ask(request, 'connected')))
        answers.forEach(tally)
      } else {
        for (const driver of drivers) tally(await driver.ask(request, 'connected'))
      }
    }
    if (failed > 0) throw new Error(`${failed} of ${count} clients could not subscribe (first: ${firstError ?? '?'})`)
    return { seconds: (performance.now() - started) / 1000, cpuSeconds: totalCpuSeconds(cluster.pids) - cpuBefore }
  }

  async close (): Promise<void> {
    this.redisInfo?.disconnect()
    this.redisInfo = undefined
    if (this.redis !== undefined) await stop(this.redis.child)
    this.redis = undefined
    for (const { client } of this.clusterInfo ?? []) client.disconnect()
    this.clusterInfo = undefined
    await this.redisCluster?.stop()
    this.redisCluster = undefined
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

/** The mode label of relay_redis_info at 1 on GET /metrics (single, sentinel, cluster, none), or what went wrong. */
async function redisModeOf (port: number): Promise<string> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/metrics`)
    const text = await response.text()
    return /^relay_redis_info\{mode="([^"]+)"\} 1$/m.exec(text)?.[1] ?? `absent (HTTP ${response.status})`
  } catch (error) {
    return `unreadable (${(error as Error).message})`
  }
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
      if (name === 'f') {
        results.push(...await runStorm(options, log))
        continue
      }
      let rate = options.rate
      const systems = [...systemsFor(name, options)]
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
      const named = scenario(name, options, rate)
      const redisModes = options.redisModes ?? DEFAULT_REDIS_MODES[name]
      const clustered = named.nodes > 1 && redisModes?.some((mode) => mode !== 'single') === true && systems.includes('relay')
      const plan = clustered ? { ...named, title: named.title.replace(/ through one Redis$/, ' through one Redis, or a Redis Cluster where the row says so') } : named
      log(plan.title)
      for (const system of systems) {
        // The relay's multi-node cases once per Redis mode asked for; everything else as it always ran.
        const modes = system === 'relay' && plan.nodes > 1 && redisModes !== undefined ? redisModes : [undefined]
        for (const run of scenarioCases(plan, options)) {
          for (const mode of modes) {
            const result = await bench.run(system, run, mode)
            log(`  ${system}${mode === undefined ? '' : ` (${REDIS_MODE_LABEL[mode]})`}` +
              `${result.eventsPerRequest === undefined ? '' : `, ${result.eventsPerRequest} per batch`}: ${describe(result)}`)
            results.push(result)
          }
        }
      }
    }
  } finally {
    await bench.close()
  }
  return results
}

function describe (result: CaseResult): string {
  if (result.error !== undefined) return `not run: ${result.error}`
  const memory = `${Math.round(result.bytesPerConnection ?? 0)} bytes (heap ${Math.round(result.heapBytesPerConnection ?? 0)}) per connection`
  if (result.messages === 0) return memory
  return `${result.bytesPerConnection === undefined ? '' : `${memory}, `}` +
    `${Math.round(result.deliveriesPerSecond)} deliveries/s, ${result.cpuMicrosPerDelivery.toFixed(2)} µs CPU/delivery, ` +
    `p99 ${result.latency.p99.toFixed(1)} ms, lost ${result.lost}`
}
