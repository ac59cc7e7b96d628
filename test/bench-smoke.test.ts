import { spawnSync } from 'node:child_process'
import t from 'tap'
import { runBench } from '../bench/bench.js'
import { markdown } from '../bench/report.js'
import { DEFAULT_OPTIONS, type BenchOptions, type ScenarioName, type SystemName } from '../bench/scenarios.js'

/**
 * `npm run bench` in miniature, so the harness cannot rot: every system under test, a few clients and a
 * few messages, through the same servers, driver and client code. Correctness only (every frame arrives,
 * none where it should not), never speed. The systems run side by side to keep this quick.
 */
const hasRedis = spawnSync('redis-server', ['--version']).status === 0

const tiny: BenchOptions = {
  ...DEFAULT_OPTIONS,
  // The routing mix (every message type, every kind of client), on two nodes through Redis when it can.
  scenarios: ['e'],
  mixNodes: hasRedis ? 2 : 1,
  fanoutClients: 6,
  fanoutMessages: 5,
  mixChats: 3,
  mixConsoles: 8,
  mixMessages: 20,
  inflight: 2,
  sampleEvery: 3,
  connectPhases: 2,
  drainIdleMs: 2000,
  // TypeScript starts slowly under the test runner: the driver and the relay run in this process; the
  // peers' servers are still child processes.
  driverInProcess: true,
  relayInProcess: true
}

const systems: SystemName[] = ['relay', 'socketio', 'ws', 'wsCorked']

t.test('a tiny benchmark loses nothing on any system', async (t) => {
  const runs = await Promise.all(systems.map(async (system) => await runBench({ ...tiny, systems: [system] })))
  for (const result of runs.flat()) {
    const name = `${result.system} in (${result.scenario as ScenarioName}) on ${result.nodes} node(s)`
    t.equal(result.error, undefined, `${name} ran${result.error === undefined ? '' : `: ${result.error}`}`)
    t.ok(result.expected > 0, `${name} expected deliveries`)
    t.equal(result.received, result.expected, `${name} delivered every frame`)
    t.equal(result.lost, 0, `${name} lost nothing`)
    t.equal(result.extra, 0, `${name} delivered nothing unexpected`)
    t.ok(result.latency.count > 0, `${name} timed its sampling clients`)
  }
  if (!hasRedis) t.comment('redis-server not found: ran on one node only')
})

t.test('a tiny scenario (g) reaches every socket from several loopback addresses and weighs the sockets', async (t) => {
  // Two counting drivers beside the prober and two source addresses: the paths of the 50,000-socket run.
  const scale: BenchOptions = { ...tiny, scenarios: ['g'], scaleClients: 12, scaleSeconds: 2, scaleDrivers: 2, scaleAddresses: 2, idleSettleMs: 100 }
  const runs = await Promise.all((['relay', 'ws'] as const).map(async (system) => await runBench({ ...scale, systems: [system] })))
  for (const result of runs.flat()) {
    const name = `${result.system} in (g)`
    t.equal(result.error, undefined, `${name} ran${result.error === undefined ? '' : `: ${result.error}`}`)
    t.equal(result.expected, 24, `${name} expected every message at every socket`)
    t.equal(result.received, result.expected, `${name} delivered every frame`)
    t.equal(result.lost + result.extra, 0, `${name} lost nothing and added nothing`)
    t.ok(result.latency.count > 0, `${name} timed its sampling clients`)
    t.ok((result.connectSeconds ?? 0) > 0 && Number.isFinite(result.heapBytesPerConnection), `${name} timed the connects and read the memory`)
  }
})

t.test('a tiny scenario (h) ingests the same messages one per request and in batches, losing nothing', async (t) => {
  const results = await runBench({ ...tiny, scenarios: ['h'], ingestMessages: 25, ingestBatch: 10, systems: ['socketio'] })
  t.same(results.map((result) => [result.system, result.eventsPerRequest]), [['relay', undefined], ['relay', 10]],
    'the relay only (whatever --systems says), one per request then in batches of 10')
  for (const result of results) {
    const name = `(h) ${result.eventsPerRequest === undefined ? 'one per request' : 'in batches'}`
    t.equal(result.error, undefined, `${name} ran${result.error === undefined ? '' : `: ${result.error}`}`)
    t.equal(result.postErrors, 0, `${name}: every message was accepted`)
    t.equal(result.expected, 25, `${name}: the console expects every message`)
    t.equal(result.received, 25, `${name}: and got each`)
    t.equal(result.lost + result.extra, 0, `${name} lost nothing and added nothing`)
    t.ok(Number.isFinite(result.serverCpuSeconds), `${name} read the server's CPU`)
  }
  t.match(markdown(results), /\| 10 per batch \(`POST \/batch`\) \| 3 \| 25 \|/, 'the table has a row per case: 3 batches of up to 10')
})
