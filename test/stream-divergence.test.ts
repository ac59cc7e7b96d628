import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import type { DurableEvent } from '../src/stores/bus.js'
import { RedisBus } from '../src/stores/bus-redis.js'
import { createRedisClient } from '../src/stores/redis.js'
import { decodePacket, type Packet } from '../src/protocol/packet.js'
import { StreamTracker } from '../src/socket/stream-tracker.js'
import { createMetrics } from '../src/metrics.js'
import { startRedis, type PrivateRedis } from './helpers/redis.js'

// A failover to a replica that missed the stream's tail: the new primary numbers other events with the
// offsets this node already delivered. Offsets alone cannot tell; the repair after the resubscription
// compares the last delivered event with what the stream holds at its offset.

const silent = { info: () => {}, warn: () => {}, error: () => {} }
const TOPIC = 'chat:diverge'

async function redisBus (t: Test, redis: PrivateRedis, prefix: string, name: string): Promise<RedisBus> {
  const options = { retryMaxMs: 50, commandTimeoutMs: 1000, node: name }
  const publisher = createRedisClient(redis.url, { ...options, role: 'publish' })
  const subscriber = createRedisClient(redis.url, { ...options, role: 'subscribe' })
  const bus = new RedisBus({ publisher, subscriber, prefix, settleMs: 0, pingIntervalMs: 200, log: silent })
  t.teardown(async () => {
    await bus.close()
    publisher.disconnect()
    subscriber.disconnect()
  })
  while (!bus.isReady()) await new Promise((resolve) => setTimeout(resolve, 10))
  return bus
}

function event (text: string): DurableEvent {
  const frame = JSON.stringify({ type: 'message_added', data: { message: { id: text, text } } })
  return {
    payloads: [[frame.slice(0, -1)]],
    appends: [{ topic: TOPIC, routingHead: `{"t":${Date.now()},"a":{"scope":"chat","chat":"diverge"}`, payload: 0 }]
  }
}

const textOf = (packet: Packet): string => (JSON.parse(packet.frame.toString()) as { data: { message: { text: string } } }).data.message.text

async function until (check: () => boolean, what: string, ms = 5000): Promise<void> {
  const started = Date.now()
  while (!check()) {
    if (Date.now() - started > ms) throw new Error(`${what}: not within ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

interface Node { bus: RedisBus, tracker: StreamTracker, delivered: Packet[], broken: string[], metrics: ReturnType<typeof createMetrics> }

async function node (t: Test, redis: PrivateRedis, prefix: string): Promise<Node> {
  const bus = await redisBus(t, redis, prefix, 'a')
  const metrics = createMetrics({ defaults: false })
  const delivered: Packet[] = []
  const broken: string[] = []
  const tracker = new StreamTracker(bus, { deliver: (_topic, packet) => delivered.push(packet), broken: (topic) => broken.push(topic), log: silent }, metrics, 300)
  bus.onPacket((topic, bytes) => tracker.accept(topic, decodePacket(bytes)))
  bus.onStateChange((state) => { if (state === 'ready') tracker.repairAll() })
  await bus.subscribe(TOPIC)
  await tracker.open(TOPIC)
  return { bus, tracker, delivered, broken, metrics }
}

/** Kills node A's subscribing connection only: A resubscribes and repairs. */
async function killSubscriberOfA (probe: Redis): Promise<void> {
  const line = (await probe.client('LIST') as string).split('\n').find((entry) => entry.includes(' name=relay-subscribe-a '))
  const id = /\bid=(\d+)/.exec(line ?? '')?.[1]
  if (id === undefined) throw new Error('no subscriber of node A')
  await probe.call('CLIENT', 'KILL', 'ID', id)
}

/**
 * Node A delivers one..three; then `meanwhile` runs (the stream loses its tail, or not), node B appends
 * "other", and A's subscriber drops, so A's repair after resubscribing looks at the stream.
 */
async function scene (t: Test, meanwhile: (probe: Redis, prefix: string) => Promise<void>): Promise<{ a: Node, b: RedisBus, epochBefore: string }> {
  const redis = await startRedis(t)
  const prefix = redis.prefix()
  const a = await node(t, redis, prefix)
  const b = await redisBus(t, redis, prefix, 'b')
  for (const text of ['one', 'two', 'three']) await b.append(event(text))
  await until(() => a.delivered.length === 3, 'node A delivered three events')
  const epochBefore = a.tracker.position(TOPIC)?.epoch as string
  const probe = new Redis(redis.url)
  t.teardown(() => probe.disconnect())
  await meanwhile(probe, prefix)
  // With the tail lost, "other" takes offset 3 again: A gets it live and drops it as delivered already.
  await b.append(event('other'))
  await new Promise((resolve) => setTimeout(resolve, 50))
  await killSubscriberOfA(probe)
  return { a, b, epochBefore }
}

t.test('a stream that lost the tail this node delivered, then reused its offset: new epoch, sockets closed 1012', async (t) => {
  const { a, b, epochBefore } = await scene(t, async (probe, prefix) => {
    // What the promoted replica holds: offset 3 never reached it.
    const history = `${prefix}history:${TOPIC}`
    const kept = (await probe.xrangeBuffer(history, '-', '2-0'))
    await probe.del(history)
    for (const [id, fields] of kept) await probe.xadd(history, id.toString(), ...fields)
    await probe.hset(`${prefix}position:${TOPIC}`, 'o', 2)
  })
  await until(() => a.broken.length > 0, 'the stream declared broken')
  t.same(a.broken, [TOPIC], 'its sockets are closed to reconnect')
  t.same(a.delivered.map(textOf), ['one', 'two', 'three'], '"other" is never delivered as if it followed "three"')
  const [position] = await b.positions([TOPIC])
  t.not(position?.epoch, epochBefore, 'the stream has a new epoch: clients holding offset 3 resync')
  t.equal(a.tracker.position(TOPIC)?.epoch, position?.epoch, 'the node follows the new epoch')
  const metrics = await a.metrics.registry.getSingleMetricAsString('relay_stream_repairs_total')
  t.match(metrics, /outcome="diverged"} 1/, 'counted as diverged')
  await b.append(event('after'))
  await until(() => a.delivered.length === 4, 'the next event delivered live')
  t.equal(textOf(a.delivered[3] as Packet), 'after')
})

t.test('a resubscription with nothing lost: the check passes and nothing is closed', async (t) => {
  const { a } = await scene(t, async () => {})
  await until(() => a.delivered.length === 4, 'node A got the event')
  // Wait for the repair after the resubscription to have looked.
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.same(a.delivered.map(textOf), ['one', 'two', 'three', 'other'])
  t.same(a.broken, [], 'no socket closed')
  const metrics = await a.metrics.registry.getSingleMetricAsString('relay_stream_repairs_total')
  t.notMatch(metrics, /outcome="diverged"/, 'no divergence found')
})

t.test('a stream read after its events were published has nothing to compare: a resubscription closes nothing', async (t) => {
  const redis = await startRedis(t)
  const prefix = redis.prefix()
  const b = await redisBus(t, redis, prefix, 'b')
  for (const text of ['one', 'two', 'three']) await b.append(event(text))
  const a = await node(t, redis, prefix)
  t.equal(a.tracker.position(TOPIC)?.offset, 3, 'A starts at the top, having delivered nothing')
  const probe = new Redis(redis.url)
  t.teardown(() => probe.disconnect())
  await killSubscriberOfA(probe)
  await new Promise((resolve) => setTimeout(resolve, 300))
  await b.append(event('four'))
  await until(() => a.delivered.length === 1, 'the next event delivered')
  t.same(a.delivered.map(textOf), ['four'])
  t.same(a.broken, [], 'no socket closed: the event at offset 3 was never this node\'s to compare')
})
