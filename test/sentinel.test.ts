import { randomUUID } from 'node:crypto'
import { createWriteStream, type WriteStream } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join as joinPath } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { connect, join, type Frame, type Position, type TestClient } from './helpers/client.js'
import { eventually, FAST_REDIS_ENV, waitForBus } from './helpers/cluster.js'
import { BURST_KINDS, metric, offsetProblems, owedTo } from './helpers/recovery.js'
import { startSentinelRedis, type SentinelRedis } from './helpers/redis-ha.js'
import { API_TOKEN, customerToken, operatorToken, startRelay, type Relay } from './helpers/relay.js'
import { chatOf, messageOf, routingSuite } from './helpers/routing-suite.js'

// Issue 13: the relay on Redis Sentinel (REDIS_SENTINELS, REDIS_SENTINEL_NAME; REDIS_REPLICA_ACKS 1 by
// default there). Each test starts its own primary, replica and three sentinels (test/helpers/redis-ha.ts).
t.setTimeout(60_000)

/** The relays' Redis connections in this process, and the last error each saw: a failure says what state they are in. */
const relayConnections = new Map<Redis, string>()
const connectRedis = Redis.prototype.connect
Redis.prototype.connect = function (this: Redis, ...args: Parameters<typeof connectRedis>) {
  if (String(this.options.connectionName).startsWith('relay-') && !relayConnections.has(this)) {
    relayConnections.set(this, '')
    this.on('error', (error: Error) => relayConnections.set(this, error.message))
  }
  return connectRedis.apply(this, args)
} as typeof connectRedis

function connectionStates (): string {
  const states = new Map<string, number>()
  for (const [client, lastError] of relayConnections) {
    const state = `${client.status}${client.status === 'ready' ? '' : ` (last error: ${lastError})`}`
    states.set(state, (states.get(state) ?? 0) + 1)
  }
  return [...states].map(([state, count]) => `${count} ${state}`).join('; ')
}

/** Relay nodes in Sentinel mode under one fresh prefix, each with its bus ready; `logTo` gets each node's pino lines. */
async function sentinelNodes (t: Test, ha: SentinelRedis, count: number, env: Record<string, string> = {}, logTo?: (node: number) => WriteStream): Promise<Relay[]> {
  const shared = { REDIS_SENTINELS: ha.sentinelsEnv, REDIS_SENTINEL_NAME: ha.name, REDIS_PREFIX: ha.prefix(), ...FAST_REDIS_ENV, ...env }
  const relays: Relay[] = []
  for (let node = 0; node < count; node++) {
    relays.push(await startRelay(t, shared, logTo === undefined ? undefined : { level: 'info', stream: logTo(node) }))
  }
  await Promise.all(relays.map(async (relay) => await waitForBus(relay, 'ready', 10_000)))
  return relays
}

t.test('routing in Sentinel mode: three nodes, sockets on nodes 1 and 2, events posted to node 0', async (t) => {
  routingSuite(t, async (t) => {
    const ha = await startSentinelRedis(t)
    const [ingest, ...socketNodes] = await sentinelNodes(t, ha, 3)
    if (ingest === undefined) throw new Error('no ingest node')
    t.equal(ingest.config.redis?.mode, 'sentinel', 'the nodes reach Redis through the Sentinels')
    t.equal(ingest.config.replicaAcks, 1, 'and wait for one replica by default')
    return { socketUrls: socketNodes.map((node) => node.wsUrl), post: ingest.post }
  })
})

// ---------------------------------------------------------------------------------------------------
// Failover mid-burst

/** A reconnect the relay answered `recovered: false`, and the last message of each stream the client held then. */
interface NotRecovered {
  held: number[]
}

/**
 * A socket's seat: the socket a client opened, and each one it reconnected with `since` after its
 * socket was closed (1012: a stream its node could not repair), like a real client (SPEC Recovery).
 */
class Seat {
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
    readonly nodes: Relay[]
  ) {}

  get path (): '/chat' | '/broadcast' { return this.who === 'customer' ? '/chat' : '/broadcast' }

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
        if (!recovered) this.notRecovered.push({ held })
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

/** One event of the backend: posted with its own Idempotency-Key, retried with it until 200. */
interface BackendEvent {
  message: Record<string, unknown>
  key: string
  /** Status of each attempt, in order. */
  answers: number[]
}

const acknowledged = (event: BackendEvent): boolean => event.answers.includes(200)

async function postEvent (relay: Relay, event: BackendEvent): Promise<number> {
  const response = await relay.app.inject({
    method: 'POST',
    url: '/message',
    headers: { 'api-token': API_TOKEN, 'idempotency-key': event.key },
    payload: { message: event.message }
  })
  event.answers.push(response.statusCode)
  return response.statusCode
}

const KILL_AFTER_ACKS = 60
const ACKS_AFTER_FAILOVER = 60

t.test('primary SIGKILLed mid-burst: the nodes follow the failover, every event answered 200 reaches every socket once and in order', async (t) => {
  const started = Date.now()
  const ha = await startSentinelRedis(t)
  const logDir = await mkdtemp(joinPath(tmpdir(), 'relay-sentinel-logs-'))
  const streams: WriteStream[] = []
  let failureSeen = false
  const logFile = (node: number): string => joinPath(logDir, `node-${node}.log`)
  t.teardown(async () => {
    await Promise.all(streams.map(async (stream) => await new Promise((resolve) => stream.end(resolve))))
    if (t.passing() && !failureSeen && process.env.KEEP_LOGS === undefined) await rm(logDir, { recursive: true, force: true })
  })
  /** Each node's warnings and errors: a count, and once something failed the last ones not about one request. */
  const reportLogs = async (failed = !t.passing()): Promise<void> => {
    for (let index = 0; index < streams.length; index++) {
      const lines = (await readFile(logFile(index), 'utf8').catch(() => '')).split('\n').filter((line) => /"level":(40|50|60)/.test(line))
      t.comment(`node ${index}: ${lines.length} warnings or errors logged`)
      if (!failed) continue
      const tail = lines.filter((line) => !line.includes('"reqId"')).slice(-5)
      t.comment(tail.map((line) => line.replace(/"stack":"(?:[^"\\]|\\.)*",?/, '').slice(0, 400)).join('\n'))
    }
    if (failed || process.env.KEEP_LOGS !== undefined) t.comment(`relay logs kept in ${logDir}`)
  }
  relayConnections.clear()
  const nodes = await sentinelNodes(t, ha, 3, { HISTORY_SIZE: '2000', REPLAY_LIMIT: '2000' }, (node) => {
    const stream = createWriteStream(logFile(node))
    streams.push(stream)
    return stream
  })
  const [ingest, first, second] = nodes as [Relay, Relay, Relay]
  t.comment(`sentinel topology and three nodes up in ${Date.now() - started} ms`)

  // Every bus state change of every node, to show it went down and came back by itself.
  const transitions = nodes.map(() => [] as string[])
  nodes.forEach((node, index) => node.app.stores.bus.onStateChange((state) => transitions[index]?.push(state)))

  const chatUuid = randomUUID()
  const chat = chatOf(chatUuid)
  const seats = [
    new Seat('customer', 'customer on node 1', customerToken(8101, chatUuid), [first, second]),
    new Seat('customer', 'customer on node 2', customerToken(8102, chatUuid), [second, first]),
    new Seat('console', 'console on node 1', operatorToken(8103), [first, second]),
    new Seat('console', 'console on node 2', operatorToken(8104), [second, first])
  ]
  t.teardown(() => { for (const seat of seats) seat.close() })
  for (const seat of seats) await seat.open()

  // The backend: posts each event once, in order, to node 0; one answered otherwise than 200 is retried
  // later with the same Idempotency-Key. A short pause after a refusal, as a backend backs off.
  const events: BackendEvent[] = []
  let acks = 0
  let killing: Promise<{ host: string, port: number }> | undefined
  let failedOverAtAck: number | undefined
  let stopped = false
  t.teardown(() => { stopped = true })
  const burstDeadline = Date.now() + 30_000
  const burst = (async () => {
    for (let index = 0; !stopped; index++) {
      if (failedOverAtAck !== undefined && acks >= failedOverAtAck + ACKS_AFTER_FAILOVER) return
      if (Date.now() > burstDeadline) throw new Error(`the burst did not end: ${acks} acknowledged, failover ${failedOverAtAck === undefined ? 'not seen' : 'seen'}`)
      const kind = BURST_KINDS[index % BURST_KINDS.length] as (typeof BURST_KINDS)[number]
      const event: BackendEvent = { message: messageOf(chat, { type: kind.type, type_role: kind.type_role }), key: randomUUID(), answers: [] }
      events.push(event)
      const status = await postEvent(ingest, event)
      if (status === 200) {
        acks++
        if (acks === KILL_AFTER_ACKS) killing = ha.killPrimary()
      } else {
        await sleep(20)
      }
    }
  })()
  // Awaited below; a test that fails before that must not leave it rejected unhandled.
  burst.catch(() => {})

  /** Kill mid-burst, the failover, every node back by itself, then the rest of the burst. */
  const failover = async (): Promise<void> => {
    await eventually(async () => killing !== undefined, 20_000, `${KILL_AFTER_ACKS} events acknowledged`, 10)
    const killed = await (killing as Promise<{ host: string, port: number }>)
    const killedAt = Date.now()
    const promoted = await ha.waitForFailover(killed, 20_000)
    t.comment(`the sentinels promoted ${promoted.port} ${Date.now() - killedAt} ms after the kill of ${killed.port}`)
    // The promoted primary has no replica left: an event is acknowledged again once the killed node is
    // back as its replica (until then the ingest answers 503, and the backend retries). It comes back
    // while the nodes reconnect, so acknowledgements resume as early as they can.
    const replicaBack = ha.restartKilled(15_000).then(() => Date.now() - killedAt)
    replicaBack.catch(() => {})
    const stuck: string[] = []
    await Promise.all(nodes.map(async (node, index) => {
      await waitForBus(node, 'ready', 10_000).catch(() => stuck.push(`node ${index} (bus: ${transitions[index]?.join(' → ') ?? ''})`))
    }))
    if (stuck.length > 0) {
      throw new Error(`not back on the new primary within 10 s of the failover: ${stuck.join(', ')}; relay Redis connections: ${connectionStates()}`)
    }
    for (const [index, node] of nodes.entries()) {
      const readyIn = await eventually(async () => (await node.app.inject({ method: 'GET', url: '/ready' })).statusCode === 200, 10_000, `node ${index} /ready`)
      t.pass(`node ${index}: /ready 200 again (${Date.now() - killedAt} ms after the kill, waited ${readyIn} ms)`)
    }
    t.comment(`the killed node replicates the new primary ${await replicaBack} ms after the kill`)
    failedOverAtAck = acks
    await burst
  }
  try {
    await failover()
  } catch (error) {
    stopped = true
    failureSeen = true
    await reportLogs(true)
    throw error
  }

  const refused = events.filter((event) => event.answers[0] !== 200)
  const retryDeadline = Date.now() + 15_000
  for (const event of refused) {
    while (!acknowledged(event)) {
      const status = await postEvent(ingest, event)
      if (status === 200) break
      if (![503, 409].includes(status)) throw new Error(`retry of ${String(event.message.id)} answered ${status}`)
      if (Date.now() > retryDeadline) throw new Error(`retries of ${String(event.message.id)} never answered 200: ${event.answers.join(', ')}`)
      await sleep(100)
    }
  }
  const answers = events.flatMap((event) => event.answers)
  const count = (status: number): number => answers.filter((answer) => answer === status).length
  const refusedWith = (status: number): number => refused.filter((event) => event.answers.includes(status)).length
  t.comment(`${events.length} events, ${answers.length} posts: ${count(200)} answered 200, ${count(503)} answered 503 (${refusedWith(503)} events), ` +
    `${count(409)} answered 409 (${refusedWith(409)} events); other: ${answers.filter((answer) => ![200, 409, 503].includes(answer)).join(', ') || 'none'}`)
  t.ok(refusedWith(503) > 0, 'events posted during the failover were answered 503 (counted above)')
  t.same(answers.filter((answer) => ![200, 409, 503].includes(answer)), [], 'no answer other than 200, 503 or 409 (a repeat of a key still claimed)')
  t.ok(events.every(acknowledged), 'every refused event was acknowledged on a retry with its Idempotency-Key')

  const posted = new Map(events.map((event) => [event.message.id as number, event]))
  for (const seat of seats) {
    const owed = events.filter((event) => acknowledged(event) && owedTo(seat.who, event.message)).map((event) => event.message.id as number)
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
    const missing = owed.filter((id) => !received.includes(id))
    const twice = [...new Set(received.filter((id, at) => received.indexOf(id) !== at))]
    const unowed = [...new Set(received.filter((id) => !owedSet.has(id)))]
    const describe = (ids: number[]): string => ids.slice(0, 10).map((id) => `${id} (${posted.get(id)?.answers.join('/') ?? 'never posted'})`).join(', ')
    const afterRefusal = owed.filter((id) => posted.get(id)?.answers[0] !== 200).length
    t.same(missing, [], `${seat.name}: every event answered 200 that it should get arrived (${owed.length}, ${afterRefusal} of them on a retry); missing: ${describe(missing)}`)
    t.same(twice, [], `${seat.name}: none twice; twice: ${describe(twice)}`)
    t.same(unowed, [], `${seat.name}: nothing routing does not owe it`)
    t.same(seat.offsetProblems(), [], `${seat.name}: offsets strictly increase per stream over all its sockets`)
    t.same(seat.closes.filter((code) => code !== 1012), [], `${seat.name}: a socket closed by the relay is closed 1012`)
    t.same(seat.errors, [], `${seat.name}: every reconnect reached connected`)
    // recovered: false tells the client to refetch: a loss, unless the position it held named an event
    // that was never acknowledged (published by the old primary, lost with it, answered 503): a stream
    // the promoted replica numbered differently from there can only start over.
    const unexcused = seat.notRecovered.filter(({ held }) => !held.some((id) => posted.get(id)?.answers[0] !== 200))
    t.same(unexcused, [], `${seat.name}: no reconnect answered recovered: false after only acknowledged events (recovered: ${JSON.stringify(seat.recovered)})`)
    t.comment(`${seat.name}: ${seat.clients.length} socket(s), closes ${JSON.stringify(seat.closes)}, recovered ${JSON.stringify(seat.recovered)}, ` +
      `${seat.failedAttempts} failed reconnect attempt(s), ${received.length} messages`)
  }

  for (const [index, node] of nodes.entries()) {
    t.ok(transitions[index]?.includes('down') === true && transitions[index]?.at(-1) === 'ready', `node ${index}: bus went down and came back by itself (${transitions[index]?.join(' → ') ?? ''})`)
    const outcomes = await Promise.all(['repaired', 'closed', 'diverged'].map(async (outcome) => `${outcome} ${await metric(node, 'relay_stream_repairs_total', { outcome })}`))
    t.comment(`node ${index}: stream repairs ${outcomes.join(', ')}; bus reconnects ${await metric(node, 'relay_bus_reconnects_total')}`)
  }
  await reportLogs()
  t.comment(`failover test took ${Date.now() - started} ms`)
})
