import t, { type Test } from 'tap'
import type { DurableEvent } from '../src/stores/bus.js'
import { Redis } from 'ioredis'
import { RedisBus } from '../src/stores/bus-redis.js'
import { createNodeClient, createRedisCluster, LuaScript } from '../src/stores/redis.js'
import { ShardedSubscriber } from '../src/stores/sharded-subscriber.js'
import { slotOf } from '../src/stores/cluster-slot.js'
import { decodePacket, type Packet } from '../src/protocol/packet.js'
import { StreamTracker } from '../src/socket/stream-tracker.js'
import { createMetrics } from '../src/metrics.js'
import { clusterBus } from './helpers/cluster-bus.js'
import { startRedisCluster, type RedisCluster } from './helpers/redis-ha.js'

// The bus and the node's stream tracker on a real Redis Cluster through its faults: a master killed
// mid-burst (its replica promoted), a graceful CLUSTER FAILOVER, a slot migrated while its streams are
// live. What a backend was answered for (append resolved) reaches the other node exactly once, in
// offset order, directly or by repair; a backend retries what failed with the same once token.

const silent = { info: () => {}, warn: () => {}, error: () => {} }

/** The KEYS of every script call in this file (appends, positions, reads), to check each touches one slot. */
const scriptKeys: string[][] = []
const { run, runBuffer } = LuaScript.prototype
LuaScript.prototype.run = async function (this: LuaScript, client, keys, args) {
  scriptKeys.push(keys)
  return await run.call(this, client, keys, args)
}
LuaScript.prototype.runBuffer = async function (this: LuaScript, client, keys, args) {
  scriptKeys.push(keys)
  return await runBuffer.call(this, client, keys, args)
}
const TOPICS = ['chat:one', 'chat:two', 'chat:three', 'consoles', 'any-widget', 'widget:w1', 'operator:7', 'operator:8']

function event (topic: string, text: string): DurableEvent {
  const frame = JSON.stringify({ type: 'message_added', data: { message: { id: text, text } } })
  return {
    payloads: [[frame.slice(0, -1)]],
    appends: [{ topic, routingHead: `{"t":${Date.now()},"a":{"scope":"chat","chat":"x"}`, payload: 0 }],
    once: { token: `${topic}:${text}`, ttlSeconds: 600 }
  }
}

const textOf = (packet: Packet): string => (JSON.parse(packet.frame.toString()) as { data: { message: { text: string } } }).data.message.text

interface Reader { tracker: StreamTracker, delivered: Map<string, Packet[]>, broken: string[] }

async function reader (t: Test, cluster: RedisCluster, prefix: string): Promise<Reader> {
  const bus = await clusterBus(t, cluster, { prefix, replicaAcks: { replicas: 1, timeoutMs: 500 } })
  const delivered = new Map<string, Packet[]>(TOPICS.map((topic) => [topic, []]))
  const broken: string[] = []
  const tracker = new StreamTracker(bus, {
    deliver: (topic, packet) => delivered.get(topic)?.push(packet),
    broken: (topic) => broken.push(topic),
    log: silent
  }, createMetrics({ defaults: false }), 300)
  bus.onPacket((topic, bytes) => tracker.accept(topic, decodePacket(bytes)))
  bus.onStateChange((state) => { if (state === 'ready') tracker.repairAll() })
  for (const topic of TOPICS) {
    await bus.subscribe(topic)
    await tracker.open(topic)
  }
  return { tracker, delivered, broken }
}

/** Appends `count` events round the topics, each retried (same once token) until it is acknowledged. */
async function burst (bus: RedisBus, count: number, midway: () => Promise<void>): Promise<{ acked: Map<string, string[]>, failures: number }> {
  const acked = new Map<string, string[]>(TOPICS.map((topic) => [topic, []]))
  let failures = 0
  let fault: Promise<void> | undefined
  for (let index = 0; index < count; index++) {
    if (index === Math.floor(count / 3)) fault = midway()
    const topic = TOPICS[index % TOPICS.length] as string
    const text = `e${index}`
    const deadline = Date.now() + 20_000
    for (;;) {
      try {
        // ALREADY_APPENDED: an attempt that failed for us had gone through; acknowledged all the same.
        await bus.append(event(topic, text))
        acked.get(topic)?.push(text)
        break
      } catch (error) {
        failures += 1
        if (process.env.DEBUG_CB !== undefined) console.error(Date.now(), text, (error as Error).message)
        if (Date.now() > deadline) throw new Error(`${text} never acknowledged: ${(error as Error).message}`)
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
    }
  }
  await fault
  return { acked, failures }
}

async function settled (t: Test, node: Reader, acked: Map<string, string[]>): Promise<void> {
  const started = Date.now()
  const complete = (): boolean => TOPICS.every((topic) => (node.delivered.get(topic)?.length ?? 0) >= (acked.get(topic)?.length ?? 0))
  while (!complete() && Date.now() - started < 20_000) await new Promise((resolve) => setTimeout(resolve, 50))
  for (const topic of TOPICS) {
    const packets = node.delivered.get(topic) ?? []
    const texts = packets.map(textOf)
    t.same(texts, acked.get(topic), `${topic}: every acknowledged event once, in the order acknowledged`)
    const offsets = packets.map((packet) => packet.offset as number)
    t.ok(offsets.every((offset, index) => index === 0 || offset === (offsets[index - 1] as number) + 1), `${topic}: offsets +1 each`)
  }
  t.same(node.broken, [], 'no stream had to be given up (its sockets would have reconnected)')
}

/** The master serving `topic`'s stream. */
async function masterOf (cluster: RedisCluster, topic: string): Promise<{ host: string, port: number, id: string }> {
  const slot = slotOf(`x{${topic}}`)
  const master = (await cluster.masters()).find((candidate) => candidate.slots.some(([start, end]) => start <= slot && slot <= end))
  if (master === undefined) throw new Error(`no master for slot ${slot}`)
  return master
}

t.test('a master SIGKILLed mid-burst: its replica takes over and nothing acknowledged is lost or doubled', async (t) => {
  const cluster = await startRedisCluster(t)
  const prefix = cluster.prefix()
  const other = await reader(t, cluster, prefix)
  // As the relay runs with history: acknowledged while its own subscription is restored.
  const poster = await clusterBus(t, cluster, { prefix, replicaAcks: { replicas: 1, timeoutMs: 500 }, appendWhileResubscribing: true })
  const victim = await masterOf(cluster, 'chat:one')
  let elsewhere = ''
  for (let index = 0; elsewhere === ''; index++) {
    if ((await masterOf(cluster, `chat:elsewhere-${index}`)).id !== victim.id) elsewhere = `chat:elsewhere-${index}`
  }
  const { acked, failures } = await burst(poster, 240, async () => {
    await cluster.killMaster(victim)
    // The shard's subscriber connection is gone: the bus is down (/ready 503) until the slot map settles...
    const started = Date.now()
    while (poster.isReady() && Date.now() - started < 5000) await new Promise((resolve) => setTimeout(resolve, 5))
    t.notOk(poster.isReady(), 'the bus is down while a shard is lost')
    // ...but streams on the other masters still take and acknowledge durable events (their readers repair).
    t.ok(poster.canAppend(), 'appends to the other shards go on')
    await poster.append(event(elsewhere, 'during-the-failover'))
    t.pass('an event on a live shard was acknowledged during the failover')
    await cluster.waitForHealthy(20_000)
    // Until it is back as the new master's replica, that shard cannot acknowledge (REDIS_REPLICA_ACKS=1).
    await cluster.restartKilled(victim)
  })
  t.comment(`appends that failed during the failover and were retried: ${failures}`)
  await settled(t, other, acked)
})

t.test('a graceful CLUSTER FAILOVER mid-burst', async (t) => {
  const cluster = await startRedisCluster(t)
  const prefix = cluster.prefix()
  const other = await reader(t, cluster, prefix)
  const poster = await clusterBus(t, cluster, { prefix, replicaAcks: { replicas: 1, timeoutMs: 500 } })
  const master = await masterOf(cluster, 'consoles')
  const replica = (await cluster.replicas()).find((candidate) => candidate.masterId === master.id)
  if (replica === undefined) throw new Error('no replica')
  const { acked, failures } = await burst(poster, 240, async () => { await cluster.failover(replica) })
  t.comment(`appends retried: ${failures}`)
  await settled(t, other, acked)
})

t.test('a slot holding live streams migrated to another master mid-burst', async (t) => {
  const cluster = await startRedisCluster(t)
  const prefix = cluster.prefix()
  const other = await reader(t, cluster, prefix)
  const poster = await clusterBus(t, cluster, { prefix, replicaAcks: { replicas: 1, timeoutMs: 500 } })
  const topic = 'chat:two'
  const slot = slotOf(`x{${topic}}`)
  const from = await masterOf(cluster, topic)
  const to = (await cluster.masters()).find((candidate) => candidate.id !== from.id)
  if (to === undefined) throw new Error('no other master')
  const { acked, failures } = await burst(poster, 240, async () => {
    const moved = await cluster.migrateSlot(slot, from, to)
    t.ok(moved >= 2, `the slot's keys moved (${moved}): its stream and position`)
  })
  t.comment(`appends retried: ${failures}`)
  await settled(t, other, acked)
  t.equal((await masterOf(cluster, topic)).id, to.id, 'the stream lives on the other master now')
})

t.test('sharded channels: every topic is subscribed on the master of its slot', async (t) => {
  const cluster = await startRedisCluster(t)
  const prefix = cluster.prefix()
  await reader(t, cluster, prefix)
  const masters = await cluster.masters()
  for (const topic of TOPICS) {
    const master = await masterOf(cluster, topic)
    const admin = new Redis({ host: master.host, port: master.port })
    const channels = await admin.call('PUBSUB', 'SHARDCHANNELS', `${prefix}*`) as string[]
    admin.disconnect()
    t.ok(channels.includes(`${prefix}{${topic}}`), `${topic} on ${master.port}`)
  }
  t.equal(masters.length, 3)
})

t.test('a shard subscription that dies silently is found by that shard\'s probe, and the bus resubscribes', async (t) => {
  const cluster = await startRedisCluster(t)
  const prefix = cluster.prefix()
  const connection = { retryMaxMs: 100, commandTimeoutMs: 1000 }
  const target = { mode: 'cluster' as const, nodes: cluster.nodes }
  const publisher = createRedisCluster(target, { ...connection, role: 'publish' })
  const subscriber = new ShardedSubscriber(publisher, (address) => createNodeClient(address, target, { ...connection, role: 'subscribe' }), silent, 1000)
  const seen = { probeFailed: 0 }
  const bus = new RedisBus({ publisher, subscriber, prefix, sharded: true, settleMs: 0, pingIntervalMs: 150, log: silent, events: { probeFailed: () => { seen.probeFailed += 1 }, resubscribed: () => {} } })
  t.teardown(async () => {
    await bus.close()
    subscriber.disconnect()
    publisher.disconnect()
  })
  while (!bus.isReady()) await new Promise((resolve) => setTimeout(resolve, 10))
  await bus.subscribe('chat:one')
  const probes = subscriber.probeChannels((index) => `${prefix}{probe:x:${index}}`)
  t.equal(probes.length, 3, 'one probe channel per master')
  await new Promise((resolve) => setTimeout(resolve, 500))
  t.equal(seen.probeFailed, 0, 'every shard\'s probe comes back')
  // Behind the bus's back, the shard holding chat:one drops that channel and its own probe channel.
  const owner = await masterOf(cluster, 'chat:one')
  const admin = new Redis({ host: owner.host, port: owner.port })
  const shardProbe = await admin.call('PUBSUB', 'SHARDCHANNELS', `${prefix}{probe:*`) as string[]
  admin.disconnect()
  t.equal(shardProbe.length, 1, 'that master carries exactly one of the node\'s probe channels')
  const states: string[] = []
  bus.onStateChange((state) => states.push(state))
  await subscriber.unsubscribe(`${prefix}{chat:one}`, ...shardProbe)
  const started = Date.now()
  while (seen.probeFailed === 0 && Date.now() - started < 5000) await new Promise((resolve) => setTimeout(resolve, 20))
  t.equal(seen.probeFailed, 1, 'the missing probe is reported')
  while (!(states.includes('down') && bus.isReady()) && Date.now() - started < 10_000) await new Promise((resolve) => setTimeout(resolve, 20))
  t.same(states.slice(0, 1), ['down'], 'the bus went down meanwhile (/ready 503)')
  t.ok(bus.isReady(), 'and came back')
  const arrived = new Promise<string>((resolve) => bus.onPacket((topic, bytes) => { if (topic === 'chat:one') resolve(bytes.toString()) }))
  await bus.publish('chat:one', Buffer.from('back'))
  t.equal(await arrived, 'back', 'chat:one reaches the node again')
})

t.test('every stream script call of this file touched keys of one slot', async (t) => {
  t.ok(scriptKeys.length > 200, `${scriptKeys.length} calls recorded`)
  const crossing = scriptKeys.filter((keys) => new Set(keys.map((key) => slotOf(key))).size > 1)
  t.same(crossing, [], 'no call spans two slots')
})

t.test('without history, replica acknowledgements wait on each stream\'s master and the event is published in the script', async (t) => {
  const cluster = await startRedisCluster(t)
  const prefix = cluster.prefix()
  const bus = await clusterBus(t, cluster, { prefix, replicaAcks: { replicas: 1, timeoutMs: 500 }, retention: { size: 0, ttlSeconds: 600, positionTtlSeconds: 3600 } })
  const arrived: string[] = []
  bus.onPacket((topic, bytes) => arrived.push(`${topic} ${textOf(decodePacket(bytes))}`))
  for (const topic of TOPICS) await bus.subscribe(topic)
  for (const topic of TOPICS) await bus.append(event(topic, 'no-history'))
  const started = Date.now()
  while (arrived.length < TOPICS.length && Date.now() - started < 5000) await new Promise((resolve) => setTimeout(resolve, 10))
  t.same(arrived.sort(), TOPICS.map((topic) => `${topic} no-history`).sort(), 'every stream\'s event, once')
  t.same((await bus.read('chat:one', { after: 0, limit: 10 })).offsets, [], 'and nothing kept')
})
