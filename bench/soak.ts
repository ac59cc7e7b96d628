import { randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { createSigner } from 'fast-jwt'
import { Redis } from 'ioredis'
import WebSocket from 'ws'
import { cpuSeconds } from './proc.js'
import { currentRuntime, startRedis, startServer, stop, type RedisProcess, type ServerProcess } from './processes.js'
import { announceChats, Backend, Poster, supportsDeletes } from './soak-backend.js'
import { Population } from './soak-clients.js'
import { buildWorld, type ChatDef } from './soak-model.js'
import { People } from './soak-people.js'
import { sampleNode, sampleRedis, type NodeSample, type Row } from './soak-report.js'
import { summary, type Settings } from './soak-summary.js'

/**
 * `npm run soak -- --minutes N [--out FILE]`: two relay nodes on a private Redis under mixed traffic for
 * N minutes (every ingest route, client messages, typing and marks, churning customers and consoles,
 * slow consumers), memory sampled every minute, and every delivery to a stable socket checked against
 * SPEC's routing table. Exit code 1 when anything was lost, unexpected or refused.
 */
const DEFAULTS: Settings = {
  minutes: 30, chats: 100, consoles: 60, rate: 50, say: 20, typing: 8, churn: 100, 'churn-consoles': 15,
  slow: 3, 'slow-max': 180, 'heavy-rate': 8, 'heavy-kb': 48, warmup: 2
}
type Knob = keyof Settings
const USAGE = `npm run soak -- [--out FILE] ${Object.entries(DEFAULTS).map(([name, value]) => `[--${name} ${value}]`).join(' ')}\n`
function usage (problem: string): never {
  process.stderr.write(`${problem}\n${USAGE}`)
  process.exit(2)
}
let values: { out?: string, help?: boolean } & Record<string, string | boolean | undefined>
try {
  ({ values } = parseArgs({
    options: {
      out: { type: 'string' },
      help: { type: 'boolean' },
      ...Object.fromEntries(Object.keys(DEFAULTS).map((name) => [name, { type: 'string' as const }]))
    }
  }))
} catch (error) {
  usage((error as Error).message)
}
if (values.help === true) {
  process.stdout.write(USAGE)
  process.exit(0)
}
const settings: Settings = { ...DEFAULTS }
for (const name of Object.keys(DEFAULTS) as Knob[]) {
  const raw = (values as Record<string, string | undefined>)[name]
  const value = raw === undefined ? DEFAULTS[name] : Number(raw)
  if (!Number.isFinite(value) || value < 0) usage(`--${name} must be a number ≥ 0`)
  settings[name] = value
}
const knob = (name: Knob): number => settings[name]
const minutes = knob('minutes')
if (knob('chats') < 1 || knob('consoles') < 2) usage('--chats must be at least 1 and --consoles at least 2')

const API_TOKEN = `soak-${randomBytes(8).toString('hex')}`
const JWT_SECRET = randomBytes(24).toString('base64url')
const sign = createSigner({ key: JWT_SECRET, algorithm: 'HS256', expiresIn: (minutes + 60) * 60_000 })
const started = Date.now()
const log = (line: string): void => { process.stderr.write(`[soak ${((Date.now() - started) / 1000).toFixed(0)} s] ${line}\n`) }
const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

const children: { servers: ServerProcess[], redis?: RedisProcess } = { servers: [] }
let interrupted = false
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interrupted) process.exit(130)
    interrupted = true
    log(`${signal}: stopping (again to kill at once)`)
  })
}
// Last resort (an exception, a second Ctrl-C): no child outlives the soak.
process.on('exit', () => {
  for (const pid of [...children.servers.map((server) => server.pid), children.redis?.pid ?? -1]) {
    try { if (pid > 0) process.kill(pid, 'SIGKILL') } catch {}
  }
})

async function cleanup (): Promise<void> {
  await Promise.allSettled(children.servers.map(async (server) => await server.stop()))
  if (children.redis !== undefined) await stop(children.redis.child, 5000)
}

function check<T> (value: T): T {
  if (interrupted) throw new Error('interrupted')
  return value
}

/** Whether the relay sends customer_presence (SPEC, issue 14) to a console when a customer joins. */
async function probeCustomerPresence (ports: number[], chat: ChatDef): Promise<boolean> {
  const open = async (url: string): Promise<WebSocket> => await new Promise((resolve, reject) => {
    const socket = new WebSocket(url)
    socket.on('message', (raw: WebSocket.RawData) => { if (String(raw).startsWith('{"type":"connected"')) resolve(socket) })
    socket.once('close', (code) => reject(new Error(`probe socket closed ${code}`)))
    socket.once('error', reject)
  })
  const console = await open(`ws://127.0.0.1:${ports[1]}/broadcast?token=${sign({ sub: '7999', role: 'operator' })}`)
  const seen = new Promise<boolean>((resolve) => {
    console.on('message', (raw: WebSocket.RawData) => { if (String(raw).includes('"type":"customer_presence"')) resolve(true) })
    setTimeout(() => resolve(false), 3000)
  })
  const customer = await open(`ws://127.0.0.1:${ports[0]}/chat?token=${sign({ sub: '299998', role: 'user', chat: chat.uuid })}`)
  const answer = await seen
  customer.close()
  console.close()
  await sleep(1000)
  return answer
}

async function main (): Promise<number> {
  const runtime = currentRuntime(import.meta.url)
  children.redis = check(await startRedis())
  const env = {
    NODE_ENV: 'production', HOST: '127.0.0.1', API_TOKEN, JWT_SECRET, LOG_LEVEL: 'warn', REDIS_URL: children.redis.url,
    REDIS_PREFIX: `soak-${randomBytes(4).toString('hex')}:`, DRAIN_WINDOW_MS: '0', SHUTDOWN_TIMEOUT_MS: '5000'
  }
  const script = new URL(`../server${runtime.extension}`, import.meta.url)
  for (let node = 0; node < 2; node++) {
    const { server, ready } = await startServer(script, runtime, env)
    children.servers.push(server)
    if (!ready.includes('"redis"')) throw new Error(`the relay ignored REDIS_URL: GET /ready answered ${ready}`)
  }
  check(undefined)
  const servers = children.servers
  const ports = servers.map((server) => server.port)
  log(`redis-server ${children.redis.url}, relay nodes on ports ${ports.join(', ')}`)

  const world = buildWorld(knob('chats'), knob('consoles'))
  const poster = new Poster(ports, API_TOKEN)
  await announceChats(world, poster)
  const deletes = await supportsDeletes(world, poster)
  const customerPresence = await probeCustomerPresence(ports, world.chats[0] as ChatDef)
  log(`message_deleted ${deletes ? 'accepted' : 'not accepted (400): not sent'}; customer_presence ${customerPresence ? 'sent: checked' : 'not sent: not checked'}`)

  const population = new Population()
  const people = new People(world, population, {
    ports, sign, sayEveryMs: knob('say') * 1000, typeEveryMs: knob('typing') * 1000, churnCustomers: knob('churn'),
    churnConsoles: knob('churn-consoles'), slow: knob('slow'), slowMaxMs: knob('slow-max') * 1000, customerPresence
  })
  await people.connectStable()
  log(`${people.stable.length} stable sockets connected`)
  await sleep(2000)
  check(undefined)
  population.armed = true

  const redis = new Redis(children.redis.url, { maxRetriesPerRequest: 1 })
  const backend = new Backend(world, poster, population, { deletes, heavyBytes: knob('heavy-kb') * 1024 })
  const postedBefore = poster.stats.ok
  const rows: Row[] = []
  let latest: NodeSample[] = []
  let floor: number[] = []
  const sample = async (): Promise<void> => {
    latest = await Promise.all(servers.map(async (server) => await sampleNode(server.pid, server.port)))
    floor = latest.map((node, index) => Math.min(node.heap, floor[index] ?? Infinity))
  }
  const outstanding = (lostBefore: number, extraBefore: number): { lost: number, extra: number, sample: string[] } => {
    const total = { lost: 0, extra: 0, sample: [] as string[] }
    for (const socket of people.stable) {
      const { lost, extra, sample } = socket.ledger.outstanding(lostBefore, extraBefore)
      total.lost += lost
      total.extra += extra
      if (sample.length > 0 && total.sample.length < 6) total.sample.push(`${socket.describe()}: ${sample.join(', ')}`)
    }
    return total
  }
  const row = async (label: string, minute: number, final: boolean): Promise<void> => {
    await sample()
    const { memory, keys } = await sampleRedis(redis)
    // Per minute: overdue (expected 15 s ago, not here) and unexpected (here 2 min ago, never expected).
    const now = Date.now()
    const { lost, extra } = final ? outstanding(Infinity, Infinity) : outstanding(now - 15_000, now - 120_000)
    const { stats } = people
    rows.push({
      label, minute, final, nodes: latest, heapFloor: floor, redisMemory: memory, redisKeys: keys,
      posted: poster.stats.ok - postedBefore, clientEvents: stats.messages + stats.typing + stats.marks,
      deliveries: population.counters.deliveries, churned: stats.churnJoined, slowCut: stats.slowCut, lost, extra
    })
    floor = []
    log(`row ${label}: ${latest.map((node) => `RSS ${(node.rss / 2 ** 20).toFixed(1)} MB heap ${(node.heap / 2 ** 20).toFixed(1)} MB`).join(' | ')}; ` +
      `posted ${poster.stats.ok - postedBefore}, deliveries ${population.counters.deliveries}, lost ${lost}, extra ${extra}`)
  }

  await row('0', 0, false)
  const pids = [...servers.map((server) => server.pid), children.redis.pid]
  const cpuStart = { at: Date.now(), pids: pids.map(cpuSeconds), driver: process.cpuUsage() }
  people.start()
  const trafficStart = Date.now()
  const ticker = (perSecond: number, action: () => void): NodeJS.Timeout => {
    let done = 0
    return setInterval(() => {
      const due = Math.floor((Date.now() - trafficStart) / 1000 * perSecond)
      for (; done < due; done++) action()
    }, 20)
  }
  const tickers = [ticker(knob('rate'), () => backend.next()), ticker(knob('heavy-rate'), () => backend.heavy())]
  for (let step = 1; step <= minutes * 6 && !interrupted; step++) {
    await sleep(trafficStart + step * 10_000 - Date.now())
    if (interrupted) break
    if (step % 6 === 0) await row(String(step / 6), step / 6, false)
    else await sample()
  }
  for (const timer of tickers) clearInterval(timer)
  const seconds = (Date.now() - cpuStart.at) / 1000
  const driverCpu = process.cpuUsage(cpuStart.driver)
  const cpu = [...pids.map((pid, index) => cpuSeconds(pid) - (cpuStart.pids[index] ?? 0)), (driverCpu.user + driverCpu.system) / 1e6]
    .map((used) => `${(used / seconds * 100).toFixed(0)}%`)
  log('traffic stopped; churning and slow sockets leave, then the stable ones drain')
  await people.stop()
  await backend.settle()
  const drainStart = Date.now()
  let lastDeliveries = -1
  let quietSince = Date.now()
  while (!interrupted && Date.now() - drainStart < 60_000) {
    const { lost, extra } = outstanding(Infinity, Infinity)
    if (lost === 0 && extra === 0) break
    if (population.counters.deliveries !== lastDeliveries) quietSince = Date.now()
    else if (Date.now() - quietSince > 5000) break
    lastDeliveries = population.counters.deliveries
    await sleep(100)
  }
  await row('end', minutes, true)
  const totals = outstanding(Infinity, Infinity)
  population.armed = false
  people.closeStable()
  poster.close()
  redis.disconnect()

  const { text, pass } = summary({ settings, started, interrupted, rows, people, poster, population, totals, world, deletes, customerPresence, cpu })
  process.stdout.write(`${text}\n`)
  if (values.out !== undefined) writeFileSync(values.out, `${text}\n`)
  if (interrupted) return 130
  return pass ? 0 : 1
}

main().then(async (code) => {
  await cleanup()
  process.exit(code)
}, async (error: unknown) => {
  // Ctrl-C in a terminal reaches the children too: Redis and the nodes may be gone already.
  if (interrupted) log(`interrupted (${(error as Error).message})`)
  else {
    log(`failed: ${(error as Error).stack ?? String(error)}`)
    for (const [index, server] of children.servers.entries()) log(`node ${String.fromCharCode(65 + index)} output: ${server.output().trim().slice(-1500)}`)
  }
  await cleanup()
  process.exit(interrupted ? 130 : 1)
})
