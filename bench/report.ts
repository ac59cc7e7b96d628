import type { CaseResult } from './bench.js'
import { REDIS_MODE_LABEL, SYSTEM_LABEL, type ScenarioName, type SystemName } from './scenarios.js'
import { stormTable } from './storm-report.js'

/** Markdown tables of a run, and the relay's ratios to its peers checked against the issue's targets. */

const fixed = (value: number | undefined, digits: number): string =>
  value === undefined || Number.isNaN(value) ? '–' : value.toFixed(digits)
const thousands = (value: number): string => Math.round(value).toLocaleString('en-US')

const HEADER = '| system | nodes | clients | deliveries | deliveries/s | server CPU µs/delivery | Redis CPU µs/delivery | ' +
  'p50 ms | p99 ms | max ms | lost | bytes/idle conn | driver CPU s |\n' +
  '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|'

/** (g): how long all the sockets took to connect and what each costs at rest, then the deliveries to all. */
const SCALE_HEADER = '| system | clients | connect s | connects/s | server CPU µs/connect | RSS bytes/socket | heap bytes/socket | ' +
  'RSS MiB, all connected | deliveries | server CPU µs/delivery | p50 ms | p99 ms | max ms | lost | driver CPU s |\n' +
  '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|'

/** (h): the same messages ingested one per request and in batches, each row one case. */
const INGEST_HEADER = '| ingest | requests | events | events/s | server CPU µs/event | p50 ms | p99 ms | max ms | lost | driver CPU s |\n' +
  '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|'

/** The system, and with --redis-modes where the relay's nodes met. */
const labelOf = (result: CaseResult): string =>
  `${SYSTEM_LABEL[result.system]}${result.redisMode === undefined ? '' : `, ${REDIS_MODE_LABEL[result.redisMode]}`}`

const cells = (values: Array<string | number>): string => values.reduce<string>((line, cell) => `${line} ${String(cell)} |`, '|')

function lostCell (result: CaseResult): string {
  const closes = Object.entries(result.closes).map(([code, count]) => `${count}×${code}`).join(' ')
  return `${result.lost}${result.extra > 0 ? ` (+${result.extra} unexpected)` : ''}${closes === '' ? '' : ` (closed ${closes})`}`
}

function scaleRow (result: CaseResult): string {
  const label = SYSTEM_LABEL[result.system]
  if (result.error !== undefined) return `| ${label} | ${thousands(result.clients)} | not run: ${result.error} ||||||||||||`
  const connect = result.connectSeconds ?? Number.NaN
  return cells([
    label,
    thousands(result.clients),
    fixed(connect, 1),
    thousands(result.clients / connect),
    fixed(result.cpuMicrosPerConnect, 0),
    thousands(result.bytesPerConnection ?? Number.NaN),
    thousands(result.heapBytesPerConnection ?? Number.NaN),
    thousands((result.serverRssBytes ?? Number.NaN) / 2 ** 20),
    thousands(result.received),
    fixed(result.cpuMicrosPerDelivery, 2),
    fixed(result.latency.p50, 2),
    fixed(result.latency.p99, 2),
    fixed(result.latency.max, 1),
    lostCell(result),
    fixed(result.driverCpuSeconds, 1)
  ])
}

const perEvent = (result: CaseResult): number => (result.serverCpuSeconds ?? Number.NaN) / result.messages * 1e6
const requestsOf = (result: CaseResult): number => Math.ceil(result.messages / (result.eventsPerRequest ?? 1))

function ingestRow (result: CaseResult): string {
  const mode = result.eventsPerRequest === undefined ? 'one per request (`POST /message`)' : `${result.eventsPerRequest} per batch (\`POST /batch\`)`
  if (result.error !== undefined) return `| ${mode} | not run: ${result.error} ||||||||`
  return cells([
    mode,
    thousands(requestsOf(result)),
    thousands(result.received),
    thousands(result.deliveriesPerSecond),
    fixed(perEvent(result), 2),
    fixed(result.latency.p50, 2),
    fixed(result.latency.p99, 2),
    fixed(result.latency.max, 1),
    lostCell(result),
    fixed(result.driverCpuSeconds, 1)
  ])
}

/** (h): what batching changes, batch over one per request. */
function ingestComparison (rows: CaseResult[]): string[] {
  const single = rows.find((result) => result.eventsPerRequest === undefined && result.error === undefined)
  const batched = rows.find((result) => result.eventsPerRequest !== undefined && result.error === undefined)
  if (single === undefined || batched === undefined) return []
  return [`- ${batched.eventsPerRequest ?? '?'} per batch / one per request: events/s ${(batched.deliveriesPerSecond / single.deliveriesPerSecond).toFixed(2)}×, ` +
    `server CPU per event ${(perEvent(batched) / perEvent(single)).toFixed(2)}× (no target)`]
}

function row (result: CaseResult): string {
  const label = labelOf(result)
  if (result.error !== undefined) return `| ${label} | ${result.nodes} | ${thousands(result.clients)} | not run: ${result.error} ||||||||||||`
  const idle = result.messages === 0
  const lost = lostCell(result)
  return cells([
    label,
    result.nodes,
    thousands(result.clients),
    idle ? '–' : thousands(result.received),
    idle ? '–' : thousands(result.deliveriesPerSecond),
    idle ? '–' : fixed(result.cpuMicrosPerDelivery, 2),
    fixed(result.redisMicrosPerDelivery, 2),
    fixed(result.latency.p50, 2),
    fixed(result.latency.p99, 2),
    fixed(result.latency.max, 1),
    idle ? '–' : lost,
    idle ? `${thousands(result.bytesPerConnection ?? 0)} (heap ${thousands(result.heapBytesPerConnection ?? Number.NaN)})` : '–',
    idle ? '–' : fixed(result.driverCpuSeconds, 1)
  ])
}

type Check = (relay: CaseResult, peer: CaseResult) => string | undefined

function verdict (ok: boolean, missedBy: string): string {
  return ok ? 'met' : `**missed** by ${missedBy}`
}

function ratioCheck (field: 'cpuMicrosPerDelivery' | 'deliveriesPerSecond' | 'bytesPerConnection', bound: number, atMost: boolean): Check {
  return (relay, peer) => {
    const ratio = (relay[field] ?? Number.NaN) / (peer[field] ?? Number.NaN)
    if (!Number.isFinite(ratio)) return undefined
    const ok = atMost ? ratio <= bound : ratio >= bound
    const target = `${atMost ? '≤' : '≥'} ${bound}×`
    return `${ratio.toFixed(2)}× (target ${target}: ${verdict(ok, `${(Math.abs(ratio / bound - 1) * 100).toFixed(0)}%`)})`
  }
}

const p99AtMostPeer: Check = (relay, peer) => {
  const ok = relay.latency.p99 <= peer.latency.p99
  return `${fixed(relay.latency.p99, 2)} vs ${fixed(peer.latency.p99, 2)} ms (target ≤: ${verdict(ok, `${fixed(relay.latency.p99 - peer.latency.p99, 2)} ms`)})`
}
const p99WithinTwoMs: Check = (relay, peer) => {
  const gap = relay.latency.p99 - peer.latency.p99
  return `${gap >= 0 ? '+' : ''}${fixed(gap, 2)} ms (target ≤ +2 ms: ${verdict(gap <= 2, `${fixed(gap - 2, 2)} ms`)})`
}

function plainRatio (field: 'cpuMicrosPerDelivery' | 'deliveriesPerSecond' | 'bytesPerConnection' | 'heapBytesPerConnection' | 'connectSeconds' | 'cpuMicrosPerConnect'): Check {
  return (relay, peer) => {
    const ratio = (relay[field] ?? Number.NaN) / (peer[field] ?? Number.NaN)
    return Number.isFinite(ratio) ? `${ratio.toFixed(2)}× (no target)` : undefined
  }
}

const p99Gap: Check = (relay, peer) => {
  const gap = relay.latency.p99 - peer.latency.p99
  return Number.isFinite(gap) ? `${gap >= 0 ? '+' : ''}${fixed(gap, 2)} ms (no target)` : undefined
}

/**
 * What is compared in each scenario: [what, check against Socket.IO, against raw ws, against raw ws
 * corked per turn]. The issue's targets are against the first two; the third is for information.
 */
const CHECKS: Record<ScenarioName, Array<[string, Check | undefined, Check | undefined, Check | undefined]>> = {
  a: [['server CPU per delivery', ratioCheck('cpuMicrosPerDelivery', 0.5, true), ratioCheck('cpuMicrosPerDelivery', 1.25, true), plainRatio('cpuMicrosPerDelivery')],
    ['deliveries/s', ratioCheck('deliveriesPerSecond', 1, false), ratioCheck('deliveriesPerSecond', 0.9, false), plainRatio('deliveriesPerSecond')]],
  b: [['server CPU per delivery', ratioCheck('cpuMicrosPerDelivery', 0.5, true), ratioCheck('cpuMicrosPerDelivery', 1.25, true), plainRatio('cpuMicrosPerDelivery')],
    ['deliveries/s', ratioCheck('deliveriesPerSecond', 1, false), ratioCheck('deliveriesPerSecond', 0.9, false), plainRatio('deliveriesPerSecond')]],
  c: [['p99 latency', p99AtMostPeer, p99WithinTwoMs, p99Gap]],
  d: [['bytes per idle connection', undefined, ratioCheck('bytesPerConnection', 1.25, true), plainRatio('bytesPerConnection')],
    ['heap bytes per idle connection', plainRatio('heapBytesPerConnection'), plainRatio('heapBytesPerConnection'), plainRatio('heapBytesPerConnection')]],
  e: [['server CPU per delivery', plainRatio('cpuMicrosPerDelivery'), plainRatio('cpuMicrosPerDelivery'), plainRatio('cpuMicrosPerDelivery')],
    ['deliveries/s', plainRatio('deliveriesPerSecond'), plainRatio('deliveriesPerSecond'), plainRatio('deliveriesPerSecond')]],
  f: [],
  g: [['connect time', plainRatio('connectSeconds'), plainRatio('connectSeconds'), plainRatio('connectSeconds')],
    ['server CPU per connect', plainRatio('cpuMicrosPerConnect'), plainRatio('cpuMicrosPerConnect'), plainRatio('cpuMicrosPerConnect')],
    ['RSS per socket', plainRatio('bytesPerConnection'), plainRatio('bytesPerConnection'), plainRatio('bytesPerConnection')],
    ['heap per socket', plainRatio('heapBytesPerConnection'), plainRatio('heapBytesPerConnection'), plainRatio('heapBytesPerConnection')],
    ['server CPU per delivery', plainRatio('cpuMicrosPerDelivery'), plainRatio('cpuMicrosPerDelivery'), plainRatio('cpuMicrosPerDelivery')],
    ['p99 latency', p99Gap, p99Gap, p99Gap]],
  h: []
}

/** --redis-modes: each other mode's relay row against the relay on one Redis. */
function redisModeComparisons (results: CaseResult[]): string[] {
  const ran = results.filter((result) => result.system === 'relay' && result.redisMode !== undefined && result.error === undefined)
  const single = ran.find((result) => result.redisMode === 'single')
  const lines: string[] = []
  for (const other of ran) {
    if (other.redisMode === 'single') continue
    const label = REDIS_MODE_LABEL[other.redisMode ?? 'single']
    const waits = other.redisWaits === undefined ? '' : `; ${thousands(other.redisWaits)} WAITs for ${thousands(other.messages)} events`
    if (single === undefined) {
      lines.push(`- relay, ${label}: no row on one Redis to compare with${waits}`)
      continue
    }
    const ratio = (field: 'deliveriesPerSecond' | 'cpuMicrosPerDelivery' | 'redisMicrosPerEvent'): string =>
      `${fixed((other[field] ?? Number.NaN) / (single[field] ?? Number.NaN), 2)}×`
    const gap = (field: 'p50' | 'p99'): string => {
      const value = other.latency[field] - single.latency[field]
      return `${value >= 0 ? '+' : ''}${fixed(value, 2)} ms`
    }
    lines.push(`- relay, ${label} / one Redis: deliveries/s ${ratio('deliveriesPerSecond')}, server CPU per delivery ${ratio('cpuMicrosPerDelivery')}, ` +
      `Redis CPU per event ${ratio('redisMicrosPerEvent')}, p50 ${gap('p50')}, p99 ${gap('p99')}${waits} (no target)`)
  }
  return lines
}

const PEERS: Array<[SystemName, string]> = [['socketio', 'Socket.IO'], ['ws', 'raw ws'], ['wsCorked', 'raw ws corked']]

function comparisons (results: CaseResult[], name: ScenarioName): string[] {
  // The peers run on one Redis: so does the relay row they are compared with.
  const ok = (system: SystemName): CaseResult | undefined =>
    results.find((result) => result.system === system && result.error === undefined && (result.redisMode ?? 'single') === 'single')
  const relay = ok('relay')
  if (relay === undefined) return []
  const lines: string[] = []
  for (const [what, ...checks] of CHECKS[name]) {
    const parts: string[] = []
    PEERS.forEach(([system, label], index) => {
      const peer = ok(system)
      const outcome = peer === undefined ? undefined : checks[index]?.(relay, peer)
      if (outcome !== undefined) parts.push(`relay / ${label} ${outcome}`)
    })
    if (parts.length > 0) lines.push(`- ${what}: ${parts.join('; ')}`)
  }
  return lines
}

export function markdown (results: CaseResult[]): string {
  const sections: string[] = []
  const names = [...new Set(results.map((result) => result.scenario))]
  for (const name of names) {
    const rows = results.filter((result) => result.scenario === name)
    if (name === 'f') {
      sections.push([`### ${(rows[0] as CaseResult).title}`, '', ...stormTable(rows)].join('\n'))
      continue
    }
    // (c) keeps the last rate tried per system; (h)'s two cases are both the relay's.
    const final = name === 'h'
      ? rows
      : rows.filter((result, index) => !rows.slice(index + 1).some((later) => later.system === result.system && later.redisMode === result.redisMode))
    const title = (final.find((result) => result.system === 'relay') ?? final[0] as CaseResult).title
    const notes: string[] = []
    if (rows.length > final.length) {
      const tried = rows.filter((result) => !final.includes(result)).map((result) => `${result.rate ?? '?'}/s`)
      notes.push(`- raw ws queued at ${tried.join(', ')} (p99 over half the interval): rate lowered to ${final[0]?.rate ?? '?'}/s`)
    }
    const lost = final.filter((result) => result.error === undefined && result.messages > 0)
    if (lost.length > 0) {
      const total = lost.reduce((sum, result) => sum + result.lost + result.extra, 0)
      notes.push(`- lost: ${total === 0 ? 'none (target 0: met)' : `**${total} frames missing or unexpected** (target 0: missed)`}`)
    }
    const redis = final.filter((result) => result.error === undefined && result.redisMicrosPerEvent !== undefined)
    if (redis.length > 0) {
      notes.push(`- Redis CPU per event posted (INFO CPU over the posting window and the drain / ${thousands(redis[0]?.messages ?? 0)} events): ` +
        `${redis.map((result) => `${labelOf(result)} ${fixed(result.redisMicrosPerEvent, 1)} µs` +
          `${result.redisReplicaMicrosPerEvent === undefined ? '' : ` (all six nodes; the replicas ${fixed(result.redisReplicaMicrosPerEvent, 1)} µs of it)`}`).join('; ')} (no target)`)
    }
    const table = name === 'g' ? [SCALE_HEADER, ...final.map(scaleRow)] : name === 'h' ? [INGEST_HEADER, ...final.map(ingestRow)] : [HEADER, ...final.map(row)]
    const compared = name === 'h' ? ingestComparison(final) : [...comparisons(final, name), ...redisModeComparisons(final)]
    sections.push([`### ${title}`, '', ...table, '', ...compared, ...notes].join('\n'))
  }
  return sections.join('\n\n')
}
