import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { laneOf, laned, Topic } from '../src/protocol/routing.js'
import { slotOf } from '../src/stores/cluster-slot.js'
import { eventually, FAST_REDIS_ENV, waitForBus } from './helpers/cluster.js'
import {
  checkAnswers, checkSeats, connectionStates, forgetRelayConnections, postEvent, relayLogs, retryRefused, Seat,
  trackRelayConnections, type BackendEvent, type RelayLogs
} from './helpers/failover-burst.js'
import { BURST_KINDS, metric } from './helpers/recovery.js'
import { startRedisCluster, type Address, type ClusterMaster, type RedisCluster } from './helpers/redis-ha.js'
import { customerToken, operatorToken, startRelay, type Relay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

// Issue 13: the relay on a Redis Cluster (REDIS_CLUSTER_NODES; REDIS_REPLICA_ACKS 1 and CONSOLE_LANES 8
// by default there) through the cluster's faults, mid-burst: a master SIGKILLed, a slot migrated, a
// graceful CLUSTER FAILOVER. Three relay nodes: customers and consoles on nodes 1 and 2, events posted
// to node 0 by a backend that retries every refusal with the same Idempotency-Key; every event answered
// 200 reaches every socket routing owes it exactly once, offsets increase per stream (the checks of
// test/sentinel.test.ts, in test/helpers/failover-burst.ts). Each test starts its own cluster.
t.setTimeout(150_000)
trackRelayConnections()

const CONSOLE_LANES = 8
/** Chats whose slot each master serves: the faulted shard always holds live chats, and so do the others. */
const CHATS_PER_MASTER = 2
/** Acknowledgements (over all chats) before the fault starts. */
const FAULT_AFTER_ACKS = 60
/** Acknowledgements of each chat after every node is back, before the burst ends. */
const ACKS_PER_CHAT_AFTER_FAULT = 10
/** The backend's pause between two events of a chat, and after a refusal. */
const PACE_MS = 20
const BACKOFF_MS = 50

/** Relay nodes on a Redis Cluster under one fresh prefix, each with its bus ready (as in test/redis-cluster-routing.test.ts). */
async function clusterNodes (t: Test, cluster: RedisCluster, count: number, env: Record<string, string>, logs: RelayLogs): Promise<Relay[]> {
  const shared = { REDIS_CLUSTER_NODES: cluster.nodesEnv, REDIS_PREFIX: cluster.prefix(), ...FAST_REDIS_ENV, ...env }
  const nodes: Relay[] = []
  for (let index = 0; index < count; index++) nodes.push(await startRelay(t, shared, { level: 'info', stream: logs.stream(index) }))
  await Promise.all(nodes.map(async (node) => await waitForBus(node, 'ready', 15_000)))
  return nodes
}

const serves = (master: ClusterMaster, slot: number): boolean => master.slots.some(([start, end]) => start <= slot && slot <= end)

async function masterOfSlot (cluster: RedisCluster, slot: number): Promise<ClusterMaster> {
  const master = (await cluster.masters()).find((candidate) => serves(candidate, slot))
  if (master === undefined) throw new Error(`no master serves slot ${slot}`)
  return master
}

interface LiveChat {
  uuid: string
  /** The slot of its stream (and channel): `{chat:<uuid>}`. */
  slot: number
  /** The slot of its console lane's stream: `{consoles/<lane>}`. */
  laneSlot: number
  lane: string
  master: ClusterMaster
}

/** CHATS_PER_MASTER chats on each master, in master order: chats[0] is on the first master. */
async function pickChats (cluster: RedisCluster): Promise<LiveChat[]> {
  const masters = await cluster.masters()
  const byMaster = new Map<string, LiveChat[]>(masters.map((master) => [master.id, []]))
  for (let tries = 0; [...byMaster.values()].some((chats) => chats.length < CHATS_PER_MASTER); tries++) {
    if (tries > 100_000) throw new Error('no spread of chats over the masters')
    const uuid = randomUUID()
    const slot = slotOf(`{${Topic.chat(uuid)}}`)
    const master = masters.find((candidate) => serves(candidate, slot))
    const chats = master === undefined ? undefined : byMaster.get(master.id)
    if (master === undefined || chats === undefined || chats.length >= CHATS_PER_MASTER) continue
    const lane = laned(Topic.consoles, laneOf(uuid, CONSOLE_LANES), CONSOLE_LANES)
    chats.push({ uuid, slot, lane, laneSlot: slotOf(`{${lane}}`), master })
  }
  return masters.flatMap((master) => byMaster.get(master.id) ?? [])
}

/** What a test does to the cluster, chosen once the chats are known. */
interface Fault {
  /** For the comments: what is faulted, and which live streams it serves. */
  what: string
  /** The master faulted (or giving the slot away), as it was before. */
  faulted: ClusterMaster
  /** Runs mid-burst; resolves once the cluster is healthy again (and, after a kill, the shard can acknowledge again). */
  run: () => Promise<void>
  /** Checks once everything is delivered. */
  after?: (t: Test) => Promise<void>
}

interface FaultOptions {
  /** The nodes whose bus must have gone down and come back (a connection closed, or a sunsubscribe). */
  downNodes: number[]
  /** Whether the fault must make the ingest answer 503 at least once. */
  expect503: boolean
}

/** What a master serves of the live streams: `2 chats (slots …), lanes consoles/3`. */
function servedStreams (master: Address, chats: LiveChat[], masters: ClusterMaster[]): string {
  const own = masters.find((candidate) => candidate.host === master.host && candidate.port === master.port)
  if (own === undefined) return 'nothing (not a master)'
  const served = chats.filter((chat) => serves(own, chat.slot))
  const lanes = [...new Set(chats.filter((chat) => serves(own, chat.laneSlot)).map((chat) => chat.lane))]
  return `${served.length} live chat(s) (slots ${served.map((chat) => chat.slot).join(', ')}), console lanes ${lanes.join(', ') || 'none'}`
}

async function faultMidBurst (
  t: Test,
  name: string,
  options: FaultOptions,
  plan: (cluster: RedisCluster, target: LiveChat, chats: LiveChat[]) => Promise<Fault>
): Promise<void> {
  const started = Date.now()
  const cluster = await startRedisCluster(t)
  const logs = await relayLogs(t, name)
  forgetRelayConnections()
  const nodes = await clusterNodes(t, cluster, 3, { HISTORY_SIZE: '2000', REPLAY_LIMIT: '2000' }, logs)
  const [ingest, first, second] = nodes as [Relay, Relay, Relay]
  t.equal(ingest.config.redis?.mode, 'cluster', 'the nodes reach Redis as a cluster')
  t.equal(ingest.config.replicaAcks, 1, 'waiting for one replica by default')
  t.equal(ingest.config.consoleLanes, CONSOLE_LANES, `with ${CONSOLE_LANES} console lanes by default`)
  t.comment(`cluster and three nodes up in ${Date.now() - started} ms`)

  // Every bus state change of every node, to show it went down and came back by itself.
  const transitions = nodes.map(() => [] as string[])
  nodes.forEach((node, index) => node.app.stores.bus.onStateChange((state) => transitions[index]?.push(state)))

  const chats = await pickChats(cluster)
  const target = chats[0] as LiveChat
  const fault = await plan(cluster, target, chats)
  t.comment(`${chats.length} chats over the masters ${[...new Set(chats.map((chat) => chat.master.port))].join(', ')}; ${fault.what}`)

  const seats: Seat[] = []
  let customer = 8100
  for (const chat of chats) {
    const short = chat.uuid.slice(0, 8)
    seats.push(new Seat('customer', `customer of ${short} on node 1`, customerToken(++customer, chat.uuid), [first, second], chat.uuid))
    seats.push(new Seat('customer', `customer of ${short} on node 2`, customerToken(++customer, chat.uuid), [second, first], chat.uuid))
  }
  seats.push(new Seat('console', 'console on node 1', operatorToken(8201), [first, second]))
  seats.push(new Seat('console', 'console on node 2', operatorToken(8202), [second, first]))
  t.teardown(() => { for (const seat of seats) seat.close() })
  await Promise.all(seats.map(async (seat) => await seat.open()))

  // The backend: one loop per chat, each posting its chat's events in order to node 0; an event
  // answered otherwise than 200 is retried after the burst with the same Idempotency-Key.
  const events: BackendEvent[] = []
  let acks = 0
  const acksOf = new Map(chats.map((chat) => [chat.uuid, 0]))
  let faulting: Promise<void> | undefined
  let faultStartedAt = 0
  /** Each chat's acknowledgements when every node was back after the fault. */
  let backAt: Map<string, number> | undefined
  let stopped = false
  t.teardown(() => { stopped = true })
  const burstDeadline = Date.now() + 45_000
  const backend = async (chat: LiveChat): Promise<void> => {
    const record = chatOf(chat.uuid)
    for (let index = 0; !stopped; index++) {
      const before = backAt?.get(chat.uuid)
      if (before !== undefined && (acksOf.get(chat.uuid) ?? 0) >= before + ACKS_PER_CHAT_AFTER_FAULT) return
      if (Date.now() > burstDeadline) throw new Error(`the burst did not end: ${acks} acknowledged, fault ${faulting === undefined ? 'not started' : backAt === undefined ? 'not over' : 'over'}`)
      const kind = BURST_KINDS[index % BURST_KINDS.length] as (typeof BURST_KINDS)[number]
      const event: BackendEvent = { message: messageOf(record, { type: kind.type, type_role: kind.type_role }), key: randomUUID(), answers: [] }
      events.push(event)
      const status = await postEvent(ingest, event)
      if (status === 200) {
        acks++
        acksOf.set(chat.uuid, (acksOf.get(chat.uuid) ?? 0) + 1)
        if (acks === FAULT_AFTER_ACKS) {
          faultStartedAt = Date.now()
          faulting = fault.run()
          faulting.catch(() => {})
        }
      }
      await sleep(status === 200 ? PACE_MS : BACKOFF_MS)
    }
  }
  const burst = Promise.all(chats.map(backend))
  // Awaited below; a test that fails before that must not leave it rejected unhandled.
  burst.catch(() => {})

  /** The fault mid-burst, every node back by itself, then the rest of the burst. */
  const throughFault = async (): Promise<void> => {
    await eventually(async () => faulting !== undefined, 20_000, `${FAULT_AFTER_ACKS} events acknowledged`, 10)
    await faulting
    t.comment(`fault over (cluster healthy) ${Date.now() - faultStartedAt} ms after it started`)
    const stuck: string[] = []
    await Promise.all(nodes.map(async (node, index) => {
      await waitForBus(node, 'ready', 10_000).catch(() => stuck.push(`node ${index} (bus: ${transitions[index]?.join(' → ') ?? ''})`))
    }))
    if (stuck.length > 0) {
      throw new Error(`not back within 10 s of the fault: ${stuck.join(', ')}; relay Redis connections: ${connectionStates()}`)
    }
    for (const [index, node] of nodes.entries()) {
      const readyIn = await eventually(async () => (await node.app.inject({ method: 'GET', url: '/ready' })).statusCode === 200, 10_000, `node ${index} /ready`)
      t.pass(`node ${index}: /ready 200 (${Date.now() - faultStartedAt} ms after the fault started, waited ${readyIn} ms)`)
    }
    backAt = new Map(acksOf)
    await burst
  }
  try {
    await throughFault()
    await retryRefused(ingest, events)
  } catch (error) {
    stopped = true
    await logs.report(true)
    throw error
  }

  const { refused503 } = checkAnswers(t, events)
  if (options.expect503) t.ok(refused503 > 0, 'events posted during the fault were answered 503 (counted above)')
  const chatOfEvent = (event: BackendEvent): LiveChat | undefined => chats.find((chat) => chat.uuid === (event.message.chat as { uuid: string }).uuid)
  const refused = events.filter((event) => event.answers[0] !== 200)
  const ofTarget = refused.filter((event) => chatOfEvent(event) === target).length
  // A chat none of whose streams (its own, its console lane's) the faulted master served: a refusal
  // there comes from the whole bus being down while one shard is (ShardedSubscriber closes on any).
  const elsewhere = refused.filter((event) => {
    const chat = chatOfEvent(event)
    return chat !== undefined && !serves(fault.faulted, chat.slot) && !serves(fault.faulted, chat.laneSlot)
  }).length
  t.comment(`refused at first: ${ofTarget} events of the faulted chat ${target.uuid.slice(0, 8)}, ${elsewhere} of chats with no stream on ${fault.faulted.port}`)

  await checkSeats(t, seats, events)

  for (const [index, node] of nodes.entries()) {
    const states = transitions[index] ?? []
    if (options.downNodes.includes(index)) {
      t.ok(states.includes('down') && states.at(-1) === 'ready', `node ${index}: bus went down and came back by itself (${states.join(' → ')})`)
    } else {
      t.ok(states.at(-1) === undefined || states.at(-1) === 'ready', `node ${index}: bus ready at the end (${states.join(' → ') || 'no change'})`)
    }
    const outcomes = await Promise.all(['repaired', 'closed', 'diverged'].map(async (outcome) => `${outcome} ${await metric(node, 'relay_stream_repairs_total', { outcome })}`))
    t.comment(`node ${index}: stream repairs ${outcomes.join(', ')}; bus reconnects ${await metric(node, 'relay_bus_reconnects_total')}`)
  }
  await fault.after?.(t)
  await logs.report(!t.passing())
  t.comment(`${name} took ${Date.now() - started} ms`)
}

t.test('a master SIGKILLed mid-burst: its replica is promoted, the killed node returns as a replica, nothing answered 200 is lost or doubled', async (t) => {
  await faultMidBurst(t, 'cluster-kill', { downNodes: [0, 1, 2], expect503: true }, async (cluster, target, chats) => {
    const victim = target.master
    return {
      what: `SIGKILL of master ${victim.port}, serving ${servedStreams(victim, chats, await cluster.masters())}`,
      faulted: victim,
      run: async () => {
        const killedAt = Date.now()
        await cluster.killMaster(victim)
        await cluster.waitForHealthy(20_000)
        const promoted = await masterOfSlot(cluster, target.slot)
        t.comment(`${promoted.port} serves the killed master's slots ${Date.now() - killedAt} ms after the kill`)
        // The promoted master has no replica: with REDIS_REPLICA_ACKS=1 its streams answer 503 until
        // the killed node is back as its replica.
        await cluster.restartKilled(victim, 15_000)
        t.comment(`the killed node replicates ${promoted.port} ${Date.now() - killedAt} ms after the kill`)
      },
      after: async (t) => {
        t.not((await masterOfSlot(cluster, target.slot)).port, victim.port, 'the faulted chat\'s slot is served by the promoted replica')
      }
    }
  })
})

t.test('a slot holding a live chat migrated to another master mid-burst: nothing answered 200 is lost or doubled', async (t) => {
  await faultMidBurst(t, 'cluster-migrate', { downNodes: [1, 2], expect503: false }, async (cluster, target, chats) => {
    const from = target.master
    const to = chats.find((chat) => chat.master.id !== from.id)?.master
    if (to === undefined) throw new Error('no other master')
    let moved = 0
    return {
      what: `slot ${target.slot} of chat ${target.uuid.slice(0, 8)} migrated from ${from.port} to ${to.port}`,
      faulted: from,
      run: async () => {
        const startedAt = Date.now()
        moved = await cluster.migrateSlot(target.slot, from, to)
        await cluster.waitForHealthy(15_000)
        t.comment(`slot ${target.slot} moved with ${moved} keys in ${Date.now() - startedAt} ms`)
      },
      after: async (t) => {
        t.ok(moved >= 2, `the slot's keys moved with it (${moved}): the chat's stream and position at least`)
        t.equal((await masterOfSlot(cluster, target.slot)).id, to.id, 'the chat\'s slot is served by the other master now')
      }
    }
  })
})

t.test('a graceful CLUSTER FAILOVER mid-burst on the replica of a master serving live chats: nothing answered 200 is lost or doubled', async (t) => {
  await faultMidBurst(t, 'cluster-failover', { downNodes: [1, 2], expect503: false }, async (cluster, target, chats) => {
    const master = target.master
    const replica = (await cluster.replicas()).find((candidate) => candidate.masterId === master.id)
    if (replica === undefined) throw new Error(`no replica of ${master.port}`)
    return {
      what: `CLUSTER FAILOVER on ${replica.port}, replica of ${master.port} serving ${servedStreams(master, chats, await cluster.masters())}`,
      faulted: master,
      run: async () => {
        const startedAt = Date.now()
        await cluster.failover(replica, { ms: 15_000 })
        t.comment(`${replica.port} promoted and the cluster healthy ${Date.now() - startedAt} ms after CLUSTER FAILOVER`)
      },
      after: async (t) => {
        t.equal((await masterOfSlot(cluster, target.slot)).port, replica.port, 'the chat\'s slot is served by the former replica')
      }
    }
  })
})
