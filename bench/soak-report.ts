import { readFileSync } from 'node:fs'
import type { Redis } from 'ioredis'

/**
 * What the soak samples (per node RSS and V8 heap, open sockets and relay counters from /metrics, Redis
 * memory and keys) and how it reports: one Markdown row per minute, then the memory slopes after warm-up.
 */

export interface NodeSample {
  rss: number
  heap: number
  sockets: number
  typingDropped: number
  slowConsumers: number
  /** relay_sockets_closed_total by close code (both endpoints). */
  closedByCode: Record<string, number>
}

export interface Row {
  label: string
  /** The row after the drain: counts are run totals, not per minute. */
  final: boolean
  minute: number
  nodes: NodeSample[]
  /** Lowest heap of the samples taken since the previous row, per node (closer to the live size). */
  heapFloor: number[]
  redisMemory: number
  redisKeys: number
  /** Cumulative counts at this row; the table shows per-minute differences of the first four (totals on the final row). */
  posted: number
  clientEvents: number
  deliveries: number
  churned: number
  slowCut: number
  lost: number
  extra: number
}

function vmRssBytes (pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((row) => row.startsWith('VmRSS:')) ?? ''
  return Number(line.replace(/\D+/g, '')) * 1024
}

/** Sums every series of each metric name (labels ignored). */
function parseMetrics (text: string): Map<string, number> {
  const sums = new Map<string, number>()
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue
    const name = line.slice(0, line.search(/[{ ]/))
    const value = Number(line.slice(line.lastIndexOf(' ') + 1))
    if (Number.isFinite(value)) sums.set(name, (sums.get(name) ?? 0) + value)
  }
  return sums
}

function closedByCode (text: string): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const match of text.matchAll(/^relay_sockets_closed_total\{[^}]*code="([^"]+)"[^}]*\} (\S+)$/gm)) {
    counts[match[1] as string] = (counts[match[1] as string] ?? 0) + Number(match[2])
  }
  return counts
}

export async function sampleNode (pid: number, port: number): Promise<NodeSample> {
  const rss = vmRssBytes(pid)
  const response = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(10_000) })
  const text = await response.text()
  const metrics = parseMetrics(text)
  return {
    rss,
    heap: metrics.get('relay_nodejs_heap_size_used_bytes') ?? Number.NaN,
    sockets: metrics.get('relay_sockets_open') ?? 0,
    typingDropped: metrics.get('relay_typing_dropped_total') ?? 0,
    slowConsumers: metrics.get('relay_slow_consumers_total') ?? 0,
    closedByCode: closedByCode(text)
  }
}

export async function sampleRedis (redis: Redis): Promise<{ memory: number, keys: number }> {
  const info = await redis.info('memory')
  const memory = Number(/used_memory:(\d+)/.exec(info)?.[1] ?? Number.NaN)
  return { memory, keys: await redis.dbsize() }
}

const MB = (bytes: number): string => (bytes / 2 ** 20).toFixed(1)
const count = (value: number): string => Math.round(value).toLocaleString('en-US')

export function table (rows: Row[]): string {
  const names = rows[0]?.nodes.map((_, index) => String.fromCharCode(65 + index)) ?? []
  const header = ['min', ...names.map((name) => `RSS ${name} MB`), ...names.map((name) => `heap ${name} MB (floor)`), 'sockets', 'Redis MB', 'Redis keys',
    'posted', 'client events', 'deliveries', 'churned', 'slow cut (1013)', 'typing dropped', 'lost', 'extra']
  const lines = [`| ${header.join(' | ')} |`, `|${header.map((_, index) => index === 0 ? '---' : '--:').join('|')}|`]
  rows.forEach((row, index) => {
    const previous = index === 0 || row.final ? undefined : rows[index - 1]
    const delta = (pick: (value: Row) => number): string => count(pick(row) - (previous === undefined ? 0 : pick(previous)))
    const sum = (pick: (value: NodeSample) => number): number => row.nodes.reduce((total, node) => total + pick(node), 0)
    lines.push(`| ${[
      row.label,
      ...row.nodes.map((node) => MB(node.rss)),
      ...row.nodes.map((node, at) => `${MB(node.heap)} (${MB(row.heapFloor[at] ?? Number.NaN)})`),
      count(sum((node) => node.sockets)),
      MB(row.redisMemory),
      count(row.redisKeys),
      delta((value) => value.posted),
      delta((value) => value.clientEvents),
      delta((value) => value.deliveries),
      delta((value) => value.churned),
      `${count(row.slowCut)} (${count(sum((node) => node.slowConsumers))})`,
      count(sum((node) => node.typingDropped)),
      count(row.lost),
      count(row.extra)
    ].join(' | ')} |`)
  })
  return lines.join('\n')
}

/** Least-squares slope of (x, y), in y units per x unit; NaN with fewer than two points. */
export function slope (points: Array<[number, number]>): number {
  if (points.length < 2) return Number.NaN
  const meanX = points.reduce((sum, [x]) => sum + x, 0) / points.length
  const meanY = points.reduce((sum, [, y]) => sum + y, 0) / points.length
  let covariance = 0
  let variance = 0
  for (const [x, y] of points) {
    covariance += (x - meanX) * (y - meanY)
    variance += (x - meanX) ** 2
  }
  return covariance / variance
}

/**
 * The memory slopes per node over the minute rows from `warmup` on, in KB/min and % of the mean per 10
 * min, and over the second half of the run (what is still growing once every bound has filled).
 */
export function slopes (rows: Row[], warmup: number): string[] {
  const minutes = rows.filter((row) => !row.final && row.minute >= warmup)
  const last = minutes[minutes.length - 1]?.minute ?? 0
  const half = Math.max(warmup, Math.floor(last / 2))
  const names = rows[0]?.nodes.map((_, index) => String.fromCharCode(65 + index)) ?? []
  const lines: string[] = []
  const fit = (values: Array<[number, number]>): string => {
    const perMinute = slope(values)
    if (Number.isNaN(perMinute)) return 'n/a (fewer than two minute samples)'
    const mean = values.reduce((sum, [, y]) => sum + y, 0) / values.length
    const sign = perMinute >= 0 ? '+' : ''
    return `${sign}${(perMinute / 1024).toFixed(1)} KB/min (${sign}${(perMinute * 10 / mean * 100).toFixed(2)}% of its mean ${MB(mean)} MB per 10 min)`
  }
  const describe = (what: string, values: Array<[number, number]>): string => {
    const secondHalf = values.filter(([minute]) => minute >= half)
    return `- ${what}: ${fit(values)}${half > warmup && secondHalf.length >= 2 ? `; from minute ${half}: ${fit(secondHalf)}` : ''}`
  }
  names.forEach((name, index) => {
    lines.push(describe(`node ${name} RSS`, minutes.map((row) => [row.minute, row.nodes[index]?.rss ?? Number.NaN])))
    lines.push(describe(`node ${name} heap used`, minutes.map((row) => [row.minute, row.nodes[index]?.heap ?? Number.NaN])))
    lines.push(describe(`node ${name} heap floor`, minutes.map((row) => [row.minute, row.heapFloor[index] ?? Number.NaN])))
  })
  lines.push(describe('Redis used_memory', minutes.map((row) => [row.minute, row.redisMemory])))
  const keys = slope(minutes.map((row) => [row.minute, row.redisKeys]))
  lines.push(`- Redis keys: ${Number.isNaN(keys) ? 'n/a' : `${keys >= 0 ? '+' : ''}${keys.toFixed(1)} keys/min`}`)
  return lines
}
