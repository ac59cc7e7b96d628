/**
 * The reconnect storm (f), shared by its orchestrator (bench/storm.ts) and its driver
 * (bench/storm-driver.ts): the IPC conversation, what each client records, and the figures computed
 * from those records and the poster's acknowledgements.
 */

export type StormSystem = 'relay' | 'socketio'

export interface StormInit {
  system: StormSystem
  /** Node A (the clients' first node, then drained) and node B (where they come back, and every POST goes). */
  portA: number
  portB: number
  clients: number
  chats: number
  /** Messages per second, each a POST /message to node B for chat seq mod chats. */
  rate: number
  connectConcurrency: number
  apiToken: string
  jwtSecret: string
}

export type StormRequest =
  | { op: 'init', init: StormInit }
  | { op: 'connect' }
  | { op: 'post-start' }
  | { op: 'status' }
  | { op: 'post-stop' }
  | { op: 'settle', idleMs: number, deadlineMs: number }
  | { op: 'exit' }

export type StormAnswer =
  | { op: 'ready' }
  | { op: 'inited' }
  | { op: 'connected', clients: number, failed: number, firstError?: string }
  | { op: 'posting' }
  | { op: 'status', moved: number, reconnected: number }
  | { op: 'posted', posted: number, errors: number, firstError?: string }
  | { op: 'settled', figures: StormFigures }
  | { op: 'error', message: string }

/** One client's record: every message id with its first arrival, and how it came back after node A. */
export class Ledger {
  /** Message id → wall-clock ms of its first arrival. */
  readonly arrivals = new Map<number, number>()
  /** `stream:offset` of every durable frame received (the relay's offsets, Socket.IO's stream entry ids). */
  readonly offsets = new Set<string>()
  /** Frames whose message id or stream offset this client had already received. */
  duplicates = 0
  /** Node A closed it (wall-clock ms); NaN while it is still on A. */
  closedAt = Number.NaN
  /** Close code (relay) or disconnect reason (Socket.IO) of that close. */
  closedWith = ''
  /** Its first connect on node B (wall-clock ms). */
  reconnectedAt = Number.NaN
  /** What that connect said: relay `connected.data.recovered`, Socket.IO `socket.recovered`. */
  recovered: boolean | undefined
  /** Whether it held a position to resume from when node A closed it (a stream offset or, relay, a `connected.streams`). */
  positionAtClose = false
  /** Connections that ended after the one on node A (failed attempts, closes by B), by code or reason. */
  readonly laterCloses: Record<string, number> = {}
  lastDeliveryAt = Number.NaN

  constructor (readonly chat: number) {}

  closedAgain (how: string): void {
    this.laterCloses[how] = (this.laterCloses[how] ?? 0) + 1
  }

  delivery (id: number | undefined, offsetKey: string | undefined, now: number): void {
    this.lastDeliveryAt = now
    let duplicate = false
    if (offsetKey !== undefined) {
      if (this.offsets.has(offsetKey)) duplicate = true
      else this.offsets.add(offsetKey)
    }
    if (id !== undefined) {
      if (this.arrivals.has(id)) duplicate = true
      else this.arrivals.set(id, now)
    }
    if (duplicate) this.duplicates += 1
  }
}

/** A message node B acknowledged (HTTP 200), and when (wall-clock ms). */
export interface Acked { id: number, chat: number, at: number }

export interface StormFigures {
  clients: number
  /** Messages acknowledged by node B; each is owed to every client of its chat. */
  posted: number
  owed: number
  received: number
  /** Owed messages a client never received. */
  lost: number
  duplicates: number
  /** Clients node A closed, and how (close code or disconnect reason → count). */
  moved: number
  closes: Record<string, number>
  reconnected: number
  recoveredTrue: number
  /** Reconnected without recovery: `recovered: false`, or (relay) no `recovered` at all. */
  recoveredFalse: number
  /** Closed by node A without a position to resume from (no offset received yet). */
  withoutPosition: number
  /** Failed attempts and closes after the close by node A, over all clients, by code or reason. */
  laterCloses: Record<string, number>
  /** The driver's CPU seconds over the whole case. */
  driverCpuSeconds: number
  /** Wall-clock ms: the last first-connect on B, and the last client caught up (see tally). */
  lastReconnectedAt: number
  lastCaughtUpAt: number
}

/**
 * The figures of a run. A client is caught up once it is connected to node B and holds every message
 * of its chat acknowledged before that connect: the later of the connect and the arrival of the last of
 * those (replayed or live). The same rule for both systems, whatever their protocol says about replay.
 */
export function tally (ledgers: Ledger[], acked: Acked[]): StormFigures {
  const byChat = new Map<number, Acked[]>()
  for (const message of acked) {
    const chat = byChat.get(message.chat)
    if (chat === undefined) byChat.set(message.chat, [message])
    else chat.push(message)
  }
  const figures: StormFigures = {
    clients: ledgers.length, posted: acked.length, owed: 0, received: 0, lost: 0, duplicates: 0, moved: 0, closes: {},
    reconnected: 0, recoveredTrue: 0, recoveredFalse: 0, withoutPosition: 0, laterCloses: {}, driverCpuSeconds: 0, lastReconnectedAt: Number.NaN, lastCaughtUpAt: Number.NaN
  }
  const later = (current: number, at: number): number => Number.isNaN(current) || at > current ? at : current
  for (const ledger of ledgers) {
    const owed = byChat.get(ledger.chat) ?? []
    figures.owed += owed.length
    figures.duplicates += ledger.duplicates
    for (const [how, count] of Object.entries(ledger.laterCloses)) figures.laterCloses[how] = (figures.laterCloses[how] ?? 0) + count
    let caughtUpAt = ledger.reconnectedAt
    for (const message of owed) {
      const arrival = ledger.arrivals.get(message.id)
      if (arrival === undefined) {
        figures.lost += 1
        continue
      }
      figures.received += 1
      if (message.at <= ledger.reconnectedAt) caughtUpAt = Math.max(caughtUpAt, arrival)
    }
    if (Number.isNaN(ledger.closedAt)) continue
    figures.moved += 1
    if (!ledger.positionAtClose) figures.withoutPosition += 1
    figures.closes[ledger.closedWith] = (figures.closes[ledger.closedWith] ?? 0) + 1
    if (Number.isNaN(ledger.reconnectedAt)) continue
    figures.reconnected += 1
    if (ledger.recovered === true) figures.recoveredTrue += 1
    else figures.recoveredFalse += 1
    figures.lastReconnectedAt = later(figures.lastReconnectedAt, ledger.reconnectedAt)
    figures.lastCaughtUpAt = later(figures.lastCaughtUpAt, caughtUpAt)
  }
  return figures
}

/** What (f) adds to a case's result. Times are from the SIGTERM to node A. */
export interface StormResult extends StormFigures {
  chats: number
  rate: number
  drainWindowMs: number
  postErrors: number
  /** Until the driver settled: a client not back by then never came back in this run. */
  secondsObserved: number
  /** Until the last client's first connect on node B. */
  secondsToReconnect: number
  /** Until the last client caught up (see tally). */
  secondsToCatchUp: number
  /** Until node A's process exited. */
  secondsToExit: number
  /** Node B's relay_replayed_frames_total at the end (relay only: Socket.IO counts none). */
  replayedFrames: number
  /** Node B's CPU seconds from the SIGTERM until every client was back (or the deadline). */
  nodeBCpuSeconds: number
  /** INFO CPU used_cpu_sys + used_cpu_user of the private redis-server, from the first POST until settled. */
  redisCpuSeconds: number
  redisMicrosPerEvent: number
}
