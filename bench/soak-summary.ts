import { execFileSync } from 'node:child_process'
import { machine } from './proc.js'
import type { Poster } from './soak-backend.js'
import type { Population } from './soak-clients.js'
import type { buildWorld } from './soak-model.js'
import type { People } from './soak-people.js'
import { slopes, table, type Row } from './soak-report.js'

/** The soak's report: its settings in words, the minute table, the memory slopes, the totals and the verdict. */

export interface Settings {
  minutes: number
  chats: number
  consoles: number
  /** Backend events per second, over both nodes. */
  rate: number
  /** Mean seconds between a stable room socket's messages, and between its typing bursts. */
  say: number
  typing: number
  /** Churning customers and consoles at a time. */
  churn: number
  'churn-consoles': number
  /** Slow consumers at a time, and how long one waits to be cut (s). */
  slow: number
  'slow-max': number
  /** Big notes per second to the slow consumers' room, and their size (KB). */
  'heavy-rate': number
  'heavy-kb': number
  /** Minutes left out of the memory slopes. */
  warmup: number
}

export interface Outcome {
  settings: Settings
  started: number
  interrupted: boolean
  rows: Row[]
  people: People
  poster: Poster
  population: Population
  totals: { lost: number, extra: number, sample: string[] }
  world: ReturnType<typeof buildWorld>
  deletes: boolean
  customerPresence: boolean
  /** CPU over the traffic window, % of one core: node A, node B, Redis, this process. */
  cpu: string[]
}

/** The report after the table: memory slopes, what was sent and received, and the verdict. */
export function summary ({ settings, started, interrupted, rows, people, poster, population, totals, world, deletes, customerPresence, cpu }: Outcome): { text: string, pass: boolean } {
  const knob = (name: keyof Settings): number => settings[name]
  const { stats } = people
  const failed = Object.entries(poster.stats.failed)
  const last = rows[rows.length - 1]
  const relayCuts = last?.nodes.reduce((sum, node) => sum + node.slowConsumers, 0) ?? 0
  const typingDropped = last?.nodes.reduce((sum, node) => sum + node.typingDropped, 0) ?? 0
  const closes: Record<string, number> = {}
  for (const node of last?.nodes ?? []) for (const [code, n] of Object.entries(node.closedByCode)) closes[code] = (closes[code] ?? 0) + n
  const posted = last?.posted ?? 0
  let commit = 'unknown'
  try { commit = execFileSync('git', ['describe', '--always', '--dirty'], { encoding: 'utf8' }).trim() } catch {}
  const supervisors = world.chats.filter((chat) => chat.supervisorId !== undefined).length
  const problems = [
    totals.lost > 0 && `${totals.lost} lost`, totals.extra > 0 && `${totals.extra} extra`,
    failed.length > 0 && 'non-200 answers', population.counters.errorFrames > 0 && 'error frames',
    stats.stableClosed.length > 0 && 'stable sockets closed', stats.churnMissed > 0 && 'churning sockets missed events',
    typingDropped > 0 && 'typing dropped', interrupted && 'interrupted'
  ].filter((problem): problem is string => typeof problem === 'string')
  const text = [
    `### Soak: ${settings.minutes} min, 2 relay nodes + Redis (${commit}, ${new Date(started).toISOString()})`,
    '',
    `Machine: ${machine()}.`,
    `Traffic: ${world.chats.length} chats (a customer and the assigned operator each, a second operator in ${supervisors}; nodes alternate), ` +
      `${world.consoles.length} consoles (a quarter each: no sources, two widgets, two departments, one of each); ` +
      `backend ${knob('rate')} events/s over both nodes (message_added of all four types and both system roles, message_updated, ` +
      `${deletes ? 'message_deleted, ' : ''}chat_updated, chat_notification, operator_updated, global_updated); each stable room socket sends a message ` +
      `every ~${knob('say')} s and a typing burst (text, then stopped) every ~${knob('typing')} s, and every 4th posted message is marked delivered then read; ` +
      `churn: ${knob('churn')} customers (3-30 s each, half send a message) and ${knob('churn-consoles')} consoles (5-60 s) at a time; ` +
      `slow consumers: ${knob('slow')} at a time, operators that stop reading in a room of ${knob('heavy-kb')} KB notes at ${knob('heavy-rate')}/s. ` +
      `customer_presence ${customerPresence ? 'checked' : 'not sent by this relay: not checked'}.`,
    '',
    table(rows),
    '',
    `Memory after warm-up (least squares over minutes ≥ ${knob('warmup')}):`,
    ...slopes(rows, knob('warmup')),
    '',
    `- backend events answered 200: ${posted.toLocaleString('en-US')} (and ${poster.stats.ok - posted} chat announcements before); other answers: ${failed.length === 0 ? 'none' : `${failed.map(([status, n]) => `${n}×${status}`).join(', ')} (first: ${poster.stats.firstFailure ?? ''})`}; ticks skipped (64 in flight): ${poster.stats.behind}`,
    `- client events sent: ${stats.messages} messages, ${stats.typing} typing, ${stats.marks} marks; deliveries counted: ${population.counters.deliveries.toLocaleString('en-US')}`,
    `- churn: ${stats.churnJoined} sockets joined, ${stats.churnFailed} failed to join, ${stats.churnMissed} events missed${stats.churnMissedSample.length > 0 ? ` (${stats.churnMissedSample.join('; ')})` : ''}`,
    `- slow consumers: ${stats.slowSpawned} started, ${stats.slowCut} found cut while not reading, ${stats.slowSurvived} not cut within ${knob('slow-max')} s; ` +
      `the relay closed ${relayCuts} with 1013 (relay_slow_consumers_total; a silent peer may also go at the ping timeout, 1006)`,
    `- stable sockets: ${people.stable.length}, closed during the run: ${stats.stableClosed.length === 0 ? 'none' : stats.stableClosed.join('; ')}; error frames: ${population.counters.errorFrames}${population.counters.firstErrorFrame === undefined ? '' : ` (first: ${population.counters.firstErrorFrame})`}`,
    `- typing dropped by the relay: ${typingDropped}; sockets the relay saw close, by code: ${Object.entries(closes).map(([code, n]) => `${n}×${code}`).join(', ')}`,
    `- CPU while traffic ran (% of one core): node A ${cpu[0] ?? '?'}, node B ${cpu[1] ?? '?'}, Redis ${cpu[2] ?? '?'}, the soak's clients ${cpu[3] ?? '?'}`,
    `- longest arrival after acknowledgement, by frame type: ${Object.entries(population.counters.slowest).map(([type, ms]) => `${type} ${ms} ms`).join(', ')}`,
    `- lost: ${totals.lost}, extra: ${totals.extra}${totals.sample.length > 0 ? ` (${totals.sample.join('; ')})` : ''}`,
    '',
    problems.length === 0 ? '**PASS**: nothing lost, nothing unexpected, every request answered 200.' : `**FAIL**: ${problems.join(', ')}.`
  ].join('\n')
  return { text, pass: problems.length === 0 }
}

