import { createWriteStream, type WriteStream } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join as joinPath } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import type { Test } from 'tap'
import { connect, join, type Frame, type Position, type TestClient } from './client.js'
import { eventually } from './cluster.js'
import { offsetProblems, owedTo } from './recovery.js'
import { API_TOKEN, type Relay } from './relay.js'

// What a Redis fault mid-burst is checked with (test/redis-cluster-faults.test.ts; the same as
// test/sentinel.test.ts): a backend posting with Idempotency-Keys and retrying refusals with the same
// key, sockets that reconnect with `since` when the relay closes them, and per-socket delivery checks.

// ---------------------------------------------------------------------------------------------------
// The relays' Redis connections

/** The relays' Redis connections in this process, and the last error each saw: a failure says what state they are in. */
const relayConnections = new Map<Redis, string>()
let tracking = false

/** From now on, every Redis connection a relay opens in this process (connection name `relay-…`) is tracked. */
export function trackRelayConnections (): void {
  if (tracking) return
  tracking = true
  const connectRedis = Redis.prototype.connect
  Redis.prototype.connect = function (this: Redis, ...args: Parameters<typeof connectRedis>) {
    if (String(this.options.connectionName).startsWith('relay-') && !relayConnections.has(this)) {
      relayConnections.set(this, '')
      this.on('error', (error: Error) => relayConnections.set(this, error.message))
    }
    return connectRedis.apply(this, args)
  } as typeof connectRedis
}

export function forgetRelayConnections (): void {
  relayConnections.clear()
}

/** `3 ready; 1 reconnecting (last error: …)`: the state of every tracked connection still in use. */
export function connectionStates (): string {
  const states = new Map<string, number>()
  for (const [client, lastError] of relayConnections) {
    if (client.status === 'end') continue
    const state = `${client.options.connectionName ?? '?'} ${client.options.host ?? '?'}:${client.options.port ?? '?'} ${client.status}${client.status === 'ready' ? '' : ` (last error: ${lastError})`}`
    states.set(state, (states.get(state) ?? 0) + 1)
  }
  return [...states].map(([state, count]) => `${count} ${state}`).join('; ')
}

// ---------------------------------------------------------------------------------------------------
// Relay logs

export interface RelayLogs {
  /** A node's pino destination (pass `{ level: 'info', stream: logs.stream(node) }` to startRelay). */
  stream: (node: number) => WriteStream
  /** Each node's warnings and errors: a count, and once something failed the last ones not about one request. */
  report: (failed: boolean) => Promise<void>
  /** The directory is kept (and named by `report`) when the test failed or KEEP_LOGS is set. */
  keep: () => void
}

export async function relayLogs (t: Test, name: string): Promise<RelayLogs> {
  const dir = await mkdtemp(joinPath(tmpdir(), `relay-${name}-logs-`))
  const streams: WriteStream[] = []
  let kept = process.env.KEEP_LOGS !== undefined
  const file = (node: number): string => joinPath(dir, `node-${node}.log`)
  t.teardown(async () => {
    await Promise.all(streams.map(async (stream) => await new Promise((resolve) => stream.end(resolve))))
    if (t.passing() && !kept) await rm(dir, { recursive: true, force: true })
  })
  return {
    stream: (node) => {
      const stream = createWriteStream(file(node))
      streams[node] = stream
      return stream
    },
    report: async (failed) => {
      if (failed) kept = true
      for (let index = 0; index < streams.length; index++) {
        const lines = (await readFile(file(index), 'utf8').catch(() => '')).split('\n').filter((line) => /"level":(40|50|60)/.test(line))
        t.comment(`node ${index}: ${lines.length} warnings or errors logged`)
        if (!failed) continue
        const tail = lines.filter((line) => !line.includes('"reqId"')).slice(-8)
        t.comment(tail.map((line) => line.replace(/"stack":"(?:[^"\\]|\\.)*",?/, '').slice(0, 400)).join('\n'))
      }
      if (kept) t.comment(`relay logs kept in ${dir}`)
    },
    keep: () => { kept = true }
  }
}

// ---------------------------------------------------------------------------------------------------
// Sockets

/** A reconnect the relay answered `recovered: false`, and the last message of each stream the client held then. */
export interface NotRecovered {
  held: number[]
  /** When the reconnect answered recovered: false: what was acknowledged before, the client refetches. */
  at: number
}

/**
 * A socket's seat: the socket a client opened, and each one it reconnected with `since` after its
 * socket was closed (1012: a stream its node could not repair), like a real client (SPEC Recovery).
 */
export class Seat {
  readonly clients: TestClient[] = []
  /** Close codes of its sockets, while the test still wanted them. */
  readonly closes: number[] = []
  /** `connected.recovered` of each reconnect. */
  readonly recovered: boolean[] = []
  readonly notRecovered: NotRecovered[] = []
  /** Attempts that never reached `connected` (the node could not read the streams yet). */
  failedAttempts = 0
  readonly errors: string[] = []
  reconnecting: Promise<void> = Promise.resolve()
  #done = false

  constructor (
    readonly who: 'customer' | 'console',
    readonly name: string,
    readonly token: string,
    /** Where it connects first, then where it reconnects (in turn). */
    readonly nodes: Relay[],
    /** A customer's chat: only its events are owed to it. */
    readonly chat?: string
  ) {}

  get path (): '/chat' | '/broadcast' { return this.who === 'customer' ? '/chat' : '/broadcast' }

  /** Whether routing owes this seat a message (SPEC Routing, for chats without a widget). */
  owes (message: Record<string, unknown>): boolean {
    if (this.chat !== undefined && (message.chat as { uuid?: string } | undefined)?.uuid !== this.chat) return false
    return owedTo(this.who, message)
  }

  async open (): Promise<void> {
    this.#watch(await join((this.nodes[0] as Relay).wsUrl, this.path, { token: this.token, name: this.name }))
  }

  #watch (client: TestClient): void {
    this.clients.push(client)
    void client.closed.then(({ code }) => {
      if (this.#done) return
      this.closes.push(code)
      this.reconnecting = this.#reconnect().catch((error: unknown) => { this.errors.push(String(error)) })
    })
  }

  async #reconnect (): Promise<void> {
    const deadline = Date.now() + 20_000
    for (let attempt = 1; !this.#done; attempt++) {
      const node = this.nodes[attempt % this.nodes.length] as Relay
      const held = lastMessagePerStream(this.clients)
      const client = connect(node.wsUrl, this.path, {
        token: this.token, query: { since: sinceOf(chainPositions(this.clients)) }, name: `${this.name} (reconnect ${attempt})`
      })
      // An upgrade refused (or a reset) rejects `opened`: that attempt failed, the next one follows.
      client.opened.catch(() => {})
      const outcome = await Promise.race([
        client.next('connected', 5_000).then(() => 'connected' as const, () => 'timeout' as const),
        client.closed.then(() => 'closed' as const)
      ])
      if (outcome === 'connected') {
        const recovered = client.frames[0]?.data.recovered === true
        this.recovered.push(recovered)
        if (!recovered) this.notRecovered.push({ held, at: Date.now() })
        this.#watch(client)
        return
      }
      client.socket.terminate()
      this.failedAttempts++
      if (Date.now() > deadline) throw new Error(`${this.name}: no reconnect within 20 s`)
      await sleep(200)
    }
  }

  /** Durable frames over all its sockets, in arrival order. */
  durable (): Frame[] {
    return this.clients.flatMap((client) => client.frames.filter((frame) => frame.offset !== undefined))
  }

  /**
   * Offset problems over its sockets; a reconnect answered `recovered: false` starts over (a new epoch
   * may number from 1 again), so each run of sockets between two of those is checked on its own.
   */
  offsetProblems (): string[] {
    const runs: Frame[][] = []
    for (const client of this.clients) {
      const [connected] = client.frames
      if (runs.length === 0 || connected?.data?.recovered === false) runs.push([])
      runs[runs.length - 1]?.push(...client.frames.filter((frame) => frame.offset !== undefined))
    }
    return runs.flatMap((frames) => offsetProblems(frames))
  }

  receivedIds (): number[] {
    return this.durable().filter((frame) => frame.type === 'message_added').map((frame) => frame.data.message.id as number)
  }

  close (): void {
    this.#done = true
    for (const client of this.clients) client.socket.terminate()
  }
}

/** The id of the last message_added of each stream over a chain of sockets. */
function lastMessagePerStream (clients: TestClient[]): number[] {
  const last = new Map<string, number>()
  for (const client of clients) {
    for (const frame of client.frames) {
      if (frame.type === 'message_added' && frame.stream !== undefined) last.set(frame.stream, frame.data.message.id as number)
    }
  }
  return [...last.values()]
}

/**
 * Where a chain of sockets stands per stream: the first `connected.streams`; a recovered reconnect keeps
 * what the client held and adds new streams; one not recovered starts over; each durable frame moves on.
 */
function chainPositions (clients: TestClient[]): Record<string, Position> {
  let positions: Record<string, Position> = {}
  for (const client of clients) {
    for (const frame of client.frames) {
      if (frame.type === 'connected') {
        const streams = structuredClone(frame.data.streams ?? {}) as Record<string, Position>
        if (frame.data.recovered === true) {
          for (const [stream, position] of Object.entries(streams)) positions[stream] ??= position
        } else {
          positions = streams
        }
      } else if (frame.stream !== undefined && frame.offset !== undefined) {
        const position = positions[frame.stream]
        if (position !== undefined) position.offset = frame.offset
      }
    }
  }
  return positions
}

const sinceOf = (positions: Record<string, Position>): string => Buffer.from(JSON.stringify(positions)).toString('base64url')

// ---------------------------------------------------------------------------------------------------
// The backend

/** One event of the backend: posted with its own Idempotency-Key, retried with it until 200. */
export interface BackendEvent {
  message: Record<string, unknown>
  key: string
  /** Status of each attempt, in order. */
  answers: number[]
  /** When it was first posted: the backend had it then, so a client refetching later gets it. */
  postedAt?: number
}

export const acknowledged = (event: BackendEvent): boolean => event.answers.includes(200)

export async function postEvent (relay: Relay, event: BackendEvent): Promise<number> {
  event.postedAt ??= Date.now()
  const response = await relay.app.inject({
    method: 'POST',
    url: '/message',
    headers: { 'api-token': API_TOKEN, 'idempotency-key': event.key },
    payload: { message: event.message }
  })
  event.answers.push(response.statusCode)
  return response.statusCode
}

/**
 * Retries, in posting order, every event not acknowledged yet with its own Idempotency-Key until it
 * is answered 200 (503: not now; 409: its key still claimed by an attempt in flight).
 */
export async function retryRefused (relay: Relay, events: BackendEvent[], ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms
  for (const event of events) {
    while (!acknowledged(event)) {
      const status = await postEvent(relay, event)
      if (status === 200) break
      if (![503, 409].includes(status)) throw new Error(`retry of ${String(event.message.id)} answered ${status}`)
      if (Date.now() > deadline) throw new Error(`retries of ${String(event.message.id)} never answered 200: ${event.answers.join(', ')}`)
      await sleep(100)
    }
  }
}

/** What the backend was answered: counted in a comment, and anything but 200, 503 and 409 fails. */
export function checkAnswers (t: Test, events: BackendEvent[]): { refused503: number } {
  const refused = events.filter((event) => event.answers[0] !== 200)
  const answers = events.flatMap((event) => event.answers)
  const count = (status: number): number => answers.filter((answer) => answer === status).length
  const refusedWith = (status: number): number => refused.filter((event) => event.answers.includes(status)).length
  t.comment(`${events.length} events, ${answers.length} posts: ${count(200)} answered 200, ${count(503)} answered 503 (${refusedWith(503)} events), ` +
    `${count(409)} answered 409 (${refusedWith(409)} events); other: ${answers.filter((answer) => ![200, 409, 503].includes(answer)).join(', ') || 'none'}`)
  t.same(answers.filter((answer) => ![200, 409, 503].includes(answer)), [], 'no answer other than 200, 503 or 409 (a repeat of a key still claimed)')
  t.ok(events.every(acknowledged), 'every refused event was acknowledged on a retry with its Idempotency-Key')
  return { refused503: refusedWith(503) }
}

/**
 * Per seat: every event answered 200 that routing owes it arrived, none twice, none it is not owed,
 * offsets strictly increasing per stream over all its sockets, closes only 1012, every reconnect
 * connected, and no `recovered: false` unless the position it held named an event not acknowledged
 * at first (one the old master published and lost, answered 503).
 */
export async function checkSeats (t: Test, seats: Seat[], events: BackendEvent[]): Promise<void> {
  const posted = new Map(events.map((event) => [event.message.id as number, event]))
  for (const seat of seats) {
    const owed = events.filter((event) => acknowledged(event) && seat.owes(event.message)).map((event) => event.message.id as number)
    const owedSet = new Set(owed)
    try {
      await eventually(async () => {
        await seat.reconnecting
        const received = new Set(seat.receivedIds())
        return owed.every((id) => received.has(id))
      }, 10_000, `${seat.name}: every acknowledged event`)
    } catch {
      // The assertions below say what is missing.
    }
    const received = seat.receivedIds()
    const receivedSet = new Set(received)
    // After an excused recovered: false (below) the client refetches from the backend (SPEC Recovery):
    // what the backend had posted before that reconnect is its refetch's, not the socket's.
    const excusedAt = Math.max(0, ...seat.notRecovered.filter(({ held }) => held.some((id) => posted.get(id)?.answers[0] !== 200)).map(({ at }) => at))
    const refetched = owed.filter((id) => !receivedSet.has(id) && (posted.get(id)?.postedAt ?? Infinity) < excusedAt)
    if (refetched.length > 0) t.comment(`${seat.name}: ${refetched.length} acknowledged events missed before a recovered: false (a failover lost a stream's published tail): the client refetches them`)
    const missing = owed.filter((id) => !receivedSet.has(id) && !refetched.includes(id))
    const seen = new Set<number>()
    const twice = new Set<number>()
    for (const id of received) {
      if (seen.has(id)) twice.add(id)
      seen.add(id)
    }
    const unowed = [...receivedSet].filter((id) => !owedSet.has(id))
    const describe = (ids: number[]): string => ids.slice(0, 10).map((id) => `${id} (${posted.get(id)?.answers.join('/') ?? 'never posted'})`).join(', ')
    const afterRefusal = owed.filter((id) => posted.get(id)?.answers[0] !== 200).length
    t.same(missing, [], `${seat.name}: every event answered 200 that it should get arrived (${owed.length}, ${afterRefusal} of them on a retry); missing: ${describe(missing)}`)
    t.same([...twice], [], `${seat.name}: none twice; twice: ${describe([...twice])}`)
    t.same(unowed, [], `${seat.name}: nothing routing does not owe it`)
    t.same(seat.offsetProblems(), [], `${seat.name}: offsets strictly increase per stream over all its sockets`)
    t.same(seat.closes.filter((code) => code !== 1012), [], `${seat.name}: a socket closed by the relay is closed 1012`)
    t.same(seat.errors, [], `${seat.name}: every reconnect reached connected`)
    // recovered: false tells the client to refetch: a loss, unless the position it held named an event
    // that was never acknowledged (published by the old primary or master, lost with it, answered 503):
    // a stream the promoted replica numbered differently from there can only start over.
    const unexcused = seat.notRecovered.filter(({ held }) => !held.some((id) => posted.get(id)?.answers[0] !== 200))
    t.same(unexcused, [], `${seat.name}: no reconnect answered recovered: false after only acknowledged events (recovered: ${JSON.stringify(seat.recovered)})`)
    if (seat.clients.length > 1 || seat.failedAttempts > 0) {
      t.comment(`${seat.name}: ${seat.clients.length} socket(s), closes ${JSON.stringify(seat.closes)}, recovered ${JSON.stringify(seat.recovered)}, ` +
        `${seat.failedAttempts} failed reconnect attempt(s), ${received.length} messages`)
    }
  }
}
