import { randomUUID } from 'node:crypto'
import type { WriteStream } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { eventually, FAST_REDIS_ENV, waitForBus } from './helpers/cluster.js'
import {
  checkAnswers, checkSeats, connectionStates, forgetRelayConnections, postEvent, relayLogs, retryRefused, Seat,
  trackRelayConnections, type BackendEvent
} from './helpers/failover-burst.js'
import { BURST_KINDS, metric } from './helpers/recovery.js'
import { startSentinelRedis, type SentinelRedis } from './helpers/redis-ha.js'
import { customerToken, operatorToken, startRelay, type Relay } from './helpers/relay.js'
import { chatOf, messageOf, routingSuite } from './helpers/routing-suite.js'

// Issue 13: the relay on Redis Sentinel (REDIS_SENTINELS, REDIS_SENTINEL_NAME; REDIS_REPLICA_ACKS 1 by
// default there). Each test starts its own primary, replica and three sentinels (test/helpers/redis-ha.ts).
t.setTimeout(60_000)

trackRelayConnections()

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

// The backend, the sockets and their checks: test/helpers/failover-burst.ts (shared with
// test/redis-cluster-faults.test.ts).

const KILL_AFTER_ACKS = 60
const ACKS_AFTER_FAILOVER = 60

t.test('primary SIGKILLed mid-burst: the nodes follow the failover, every event answered 200 reaches every socket once and in order', async (t) => {
  const started = Date.now()
  const ha = await startSentinelRedis(t)
  const logs = await relayLogs(t, 'sentinel')
  forgetRelayConnections()
  const nodes = await sentinelNodes(t, ha, 3, { HISTORY_SIZE: '2000', REPLAY_LIMIT: '2000' }, logs.stream)
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
    await logs.report(true)
    throw error
  }

  await retryRefused(ingest, events)
  const { refused503 } = checkAnswers(t, events)
  t.ok(refused503 > 0, 'events posted during the failover were answered 503 (counted above)')
  await checkSeats(t, seats, events)

  for (const [index, node] of nodes.entries()) {
    t.ok(transitions[index]?.includes('down') === true && transitions[index]?.at(-1) === 'ready', `node ${index}: bus went down and came back by itself (${transitions[index]?.join(' → ') ?? ''})`)
    const outcomes = await Promise.all(['repaired', 'closed', 'diverged'].map(async (outcome) => `${outcome} ${await metric(node, 'relay_stream_repairs_total', { outcome })}`))
    t.comment(`node ${index}: stream repairs ${outcomes.join(', ')}; bus reconnects ${await metric(node, 'relay_bus_reconnects_total')}`)
  }
  await logs.report(!t.passing())
  t.comment(`failover test took ${Date.now() - started} ms`)
})
