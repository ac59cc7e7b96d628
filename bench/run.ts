import { writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { runBench } from './bench.js'
import { ephemeralPorts, loadAverage, machine, openFileLimits, raiseOpenFileLimit } from './proc.js'
import { markdown } from './report.js'
import { DEFAULT_OPTIONS, DEFAULT_SYSTEMS, REDIS_MODES, type BenchOptions, type ScenarioName } from './scenarios.js'

/**
 * `npm run bench [-- --flag value ...]`: every scenario and system in one invocation, tables on stdout
 * (markdown), progress on stderr. `--out FILE` also writes the tables, `--json FILE` the raw results.
 */
const numeric = ['fanout-clients', 'fanout-messages', 'rate-clients', 'rate', 'rate-seconds', 'idle-clients', 'mix-chats',
  'mix-consoles', 'mix-messages', 'mix-nodes', 'scale-clients', 'scale-seconds', 'scale-drivers', 'scale-addresses', 'ingest-messages',
  'ingest-batch', 'storm-clients', 'storm-chats', 'storm-rate', 'storm-drain-ms', 'storm-warmup-seconds', 'storm-tail-seconds', 'inflight', 'sample-every',
  'connect-concurrency', 'connect-phases', 'drain-idle-ms', 'idle-settle-ms'] as const

const { values } = parseArgs({
  options: {
    scenarios: { type: 'string' },
    systems: { type: 'string' },
    'no-find-rate': { type: 'boolean' },
    'redis-modes': { type: 'string' },
    out: { type: 'string' },
    json: { type: 'string' },
    profile: { type: 'string' },
    help: { type: 'boolean' },
    ...Object.fromEntries(numeric.map((name) => [name, { type: 'string' as const }]))
  }
})

const camel = (name: string): string => name.replace(/-(\w)/g, (_, letter: string) => letter.toUpperCase())

if (values.help === true) {
  const defaults = numeric.map((name) => `  --${name} ${String(DEFAULT_OPTIONS[camel(name) as keyof BenchOptions])}`)
  process.stdout.write([
    'npm run bench -- [--scenarios a,b,c,d,e,f,g,h] [--systems relay,socketio,ws,wsCorked] [--no-find-rate] [--redis-modes single,cluster,cluster-acks0]' +
      ' [--out FILE.md] [--json FILE] [--profile DIR]',
    `  scenarios by default: ${DEFAULT_OPTIONS.scenarios.join(',')}; (g), ${DEFAULT_OPTIONS.scaleClients} sockets on one node, only with --scenarios g;`,
    `  (f), a reconnect storm of ${DEFAULT_OPTIONS.stormClients} sockets from a drained node to another (2–4 min), only with --scenarios f`,
    `  systems by default: ${DEFAULT_SYSTEMS.a.join(',')}; in (f) ${DEFAULT_SYSTEMS.f.join(',')}; in (g) ${DEFAULT_SYSTEMS.g.join(',')}; (h), batch ingest, runs the relay only`,
    '  --redis-modes (default: single,cluster in (b)): the relay\'s 2-node cases once per mode, rows of one table: single, one redis-server',
    '  (REDIS_URL); cluster, a private Redis Cluster of 3 masters + 3 replicas (REDIS_CLUSTER_NODES, needs redis-cli), each durable append',
    '  WAITing for 1 replica; cluster-acks0, the same cluster with REDIS_REPLICA_ACKS=0. About 6 s to start the cluster, 10 s per row',
    '  (g) needs `ulimit -Hn` ≥ --scale-clients + 200 in the relay and raw ws servers; the bench raises it only where it may (CAP_SYS_RESOURCE)',
    ...defaults, ''
  ].join('\n'))
  process.exit(0)
}

const options: BenchOptions = { ...DEFAULT_OPTIONS }
for (const name of numeric) {
  const raw = (values as Record<string, string | boolean | undefined>)[name]
  if (typeof raw !== 'string') continue
  const value = Number(raw)
  if (!Number.isFinite(value) || value <= 0) throw new Error(`--${name} must be a positive number`)
  Object.assign(options, { [camel(name)]: value })
}
/** A comma-separated flag whose every item is one of `known`. */
function listOf<Name extends string> (flag: string, raw: string, known: readonly Name[]): Name[] {
  const items = raw.split(',')
  const unknown = items.filter((item) => !(known as readonly string[]).includes(item))
  if (unknown.length > 0) throw new Error(`--${flag}: unknown ${unknown.join(', ')} (known: ${known.join(', ')})`)
  return items as Name[]
}
if (options.ingestBatch > 100) throw new Error('--ingest-batch: POST /batch takes at most 100 events')
if (typeof values.scenarios === 'string') options.scenarios = listOf('scenarios', values.scenarios, Object.keys(DEFAULT_SYSTEMS) as ScenarioName[])
if (typeof values.systems === 'string') options.systems = listOf('systems', values.systems, DEFAULT_SYSTEMS.a)
if (values['no-find-rate'] === true) options.findRate = false
if (typeof values['redis-modes'] === 'string') options.redisModes = listOf('redis-modes', values['redis-modes'], REDIS_MODES)
if (typeof values.profile === 'string') options.profileDir = values.profile

// Each server and driver holds one descriptor per socket (children inherit this limit; Node raises the
// soft limit to the hard one at start). The relay itself is never told to raise it.
const scale = options.scenarios.includes('g')
const largest = Math.max(
  options.scenarios.includes('d') ? options.idleClients : 0,
  options.scenarios.includes('c') ? options.rateClients : 0,
  options.scenarios.includes('f') ? options.stormClients : 0,
  scale ? options.scaleClients : 0,
  options.fanoutClients,
  options.mixChats * 2 + options.mixConsoles
)
let limits = openFileLimits()
if (limits.hard < largest + 200) limits = raiseOpenFileLimit(largest + 200)
if (limits.soft < largest + 200) {
  process.stderr.write(`bench: ${largest} sockets per process need \`ulimit -n\` ≥ ${largest + 200}; the hard limit here is ${limits.hard}` +
    ' and this process may not raise it (CAP_SYS_RESOURCE): raise it where the bench starts (`ulimit -Hn`, docker --ulimit nofile=…)' +
    `${scale ? `, or run (g) smaller with --scale-clients ${Math.max(1, limits.hard - 200)}` : ''}\n`)
  process.exit(1)
}
// (g)'s sockets all go to one server port, so each source address needs a port per socket it carries.
const perAddress = Math.ceil(options.scaleClients / options.scaleAddresses)
if (scale && process.platform === 'linux' && perAddress > ephemeralPorts() / 2) {
  process.stderr.write(`bench: ${perAddress} sockets per source address, over half the ${ephemeralPorts()} ephemeral ports: raise --scale-addresses\n`)
  process.exit(1)
}

const started = Date.now()
const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`
const header = [
  `Machine: ${machine()}; open files: soft ${limits.soft}, hard ${limits.hard}.`,
  `Command: \`${command}\`; started ${new Date(started).toISOString()}, load average at start ${loadAverage()}.`
]
process.stderr.write(`${header.join('\n')}\n`)
const results = await runBench(options, (line) => process.stderr.write(`${line}\n`))
const minutes = ((Date.now() - started) / 60_000).toFixed(1)
const report = [...header, `Finished in ${minutes} min, load average at end ${loadAverage()}.`, '', markdown(results), ''].join('\n')
process.stdout.write(report)
if (typeof values.out === 'string') writeFileSync(values.out, report)
if (typeof values.json === 'string') writeFileSync(values.json, `${JSON.stringify({ options, results }, null, 2)}\n`)
