import type { CaseResult } from './bench.js'
import { SYSTEM_LABEL } from './scenarios.js'

/** (f)'s table: one row per system, times from the SIGTERM to node A. */

/** (f)'s Socket.IO is not the other scenarios' (servers/socketio-recovery.ts). */
const label = (result: CaseResult): string =>
  result.system === 'socketio' ? 'Socket.IO 4 + redis-streams-adapter, connection state recovery' : SYSTEM_LABEL[result.system]

const fixed = (value: number, digits: number): string => Number.isFinite(value) ? value.toFixed(digits) : '–'
const thousands = (value: number): string => Math.round(value).toLocaleString('en-US')

const HEADER = '| system | clients | events posted | owed deliveries | lost | duplicates | recovered | not recovered | not back | ' +
  's to all back on B | s to all caught up | Redis CPU µs/event | closed by node A |\n' +
  '|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|'

function row (result: CaseResult): string {
  const name = label(result)
  const storm = result.storm
  if (result.error !== undefined || storm === undefined) return `| ${name} | ${thousands(result.clients)} | not run: ${result.error ?? '?'} |||||||||||`
  const closes = Object.entries(storm.closes).map(([how, count]) => `${thousands(count)}× ${how}`).join(', ')
  return `| ${[
    name,
    thousands(storm.clients),
    `${thousands(storm.posted)}${storm.postErrors > 0 ? ` (+${storm.postErrors} refused)` : ''}`,
    thousands(storm.owed),
    thousands(storm.lost),
    thousands(storm.duplicates),
    thousands(storm.recoveredTrue),
    thousands(storm.recoveredFalse),
    thousands(storm.clients - storm.reconnected),
    // With clients missing, the last one back is not the storm's end: say that the deadline passed.
    storm.reconnected < storm.clients ? `> ${fixed(storm.secondsObserved, 0)}` : fixed(storm.secondsToReconnect, 2),
    storm.reconnected < storm.clients ? `> ${fixed(storm.secondsObserved, 0)}` : fixed(storm.secondsToCatchUp, 2),
    fixed(storm.redisMicrosPerEvent, 0),
    closes === '' ? '–' : closes
  ].join(' | ')} |`
}

export function stormTable (results: CaseResult[]): string[] {
  const done = results.filter((result) => result.storm !== undefined)
  const notes = done.map((result) => {
    const storm = result.storm as NonNullable<CaseResult['storm']>
    const ok = storm.lost === 0 && storm.duplicates === 0 && storm.recoveredFalse === 0 && storm.reconnected === storm.clients
    const again = Object.entries(storm.laterCloses).sort(([, a], [, b]) => b - a)
    const failures = again.length === 0 ? 'no failed attempt or later close' : `${again.reduce((sum, [, count]) => sum + count, 0)} failed attempts or later closes (${again.slice(0, 3).map(([how, count]) => `${count}× ${how}`).join(', ')})`
    return `- ${label(result)}: ${ok ? 'every client recovered, nothing lost or repeated (target: met)' : '**not every client recovered without loss or duplicates** (target: missed)'}; ` +
      `${storm.withoutPosition} clients held no position when node A closed them; ` +
      `${Number.isNaN(storm.replayedFrames) ? '' : `node B replayed ${thousands(storm.replayedFrames)} frames; `}node A exited ${fixed(storm.secondsToExit, 1)} s after SIGTERM ` +
      `(drain window ${storm.drainWindowMs} ms); ${failures}; node B CPU ${fixed(storm.nodeBCpuSeconds, 1)} s from SIGTERM until all back (at most 60 s); ` +
      `Redis CPU ${fixed(storm.redisCpuSeconds, 2)} s over ${thousands(storm.posted)} events; driver CPU ${fixed(storm.driverCpuSeconds, 1)} s`
  })
  const first = done[0]?.storm
  const legend = first === undefined
    ? []
    : [`- Layout: client i is customer ${thousands(1_000_000)} + i in chat i mod ${first.chats}; ${first.rate} standard messages/s round-robin over the chats, ` +
      'every one POSTed to node B and owed to every socket of its chat. Caught up: connected on B and holding every message of its chat ' +
      'acknowledged (HTTP 200) before that connect, replayed or live. Not recovered: reconnected without `recovered: true`. ' +
      'Not back: no connect on node B by the end of the run (posting stops a tail after every client is back, or 60 s after the SIGTERM; ' +
      'then the driver waits for quiet); what they are owed counts as lost.']
  return [HEADER, ...results.map(row), '', ...legend, ...notes]
}
