import t, { type Test } from 'tap'
import type { Bus, DurableEvent } from '../src/stores/bus.js'
import { MemoryBus } from '../src/stores/bus-memory.js'
import { RedisBus } from '../src/stores/bus-redis.js'
import { createRedisClient } from '../src/stores/redis.js'
import { clusterBus } from './helpers/cluster-bus.js'
import { startRedisCluster, type RedisCluster } from './helpers/redis-ha.js'
import { decodePacket, durablePacket } from '../src/protocol/packet.js'
import { startRedis, type PrivateRedis } from './helpers/redis.js'

const silent = { info: () => {}, warn: () => {}, error: () => {} }

async function redisBus (t: Test, redis: PrivateRedis, prefix = redis.prefix(), size = 100): Promise<RedisBus> {
  const options = { retryMaxMs: 100, commandTimeoutMs: 1000 }
  const publisher = createRedisClient(redis.url, { ...options, role: 'publish' })
  const subscriber = createRedisClient(redis.url, { ...options, role: 'subscribe' })
  const bus = new RedisBus({ publisher, subscriber, prefix, settleMs: 0, pingIntervalMs: 200, log: silent, retention: { size, ttlSeconds: 600, positionTtlSeconds: 3600 } })
  t.teardown(async () => {
    await bus.close()
    publisher.disconnect()
    subscriber.disconnect()
  })
  while (!bus.isReady()) await new Promise((resolve) => setTimeout(resolve, 10))
  return bus
}

/** One durable event to `topics`, its frame a message whose text is `text`. */
function event (topics: string[], text: string, numbered?: string): DurableEvent {
  const frame = JSON.stringify({ type: 'message_added', data: { message: { id: '#', text } } })
  const head = frame.slice(0, -1)
  return {
    payloads: [numbered === undefined ? [head] : head.split('"#"')],
    appends: topics.map((topic) => ({ topic, routingHead: `{"t":1,"a":{"scope":"chat","chat":"${topic}"}`, payload: 0 })),
    ...(numbered === undefined ? {} : { numbered: { chatUuid: numbered } })
  }
}

function streamSuite (t: Test, name: string, make: (t: Test, size?: number) => Promise<Bus>): void {
  t.test(`${name}: offsets +1 per event and stream, every stream of an event numbered in one step`, async (t) => {
    const bus = await make(t)
    const packets: Array<[string, Buffer]> = []
    bus.onPacket((topic, packet) => packets.push([topic, packet]))
    await bus.subscribe('chat:a')
    await bus.subscribe('consoles')
    const [a, consoles] = await bus.positions(['chat:a', 'consoles'])
    t.same([a?.offset, consoles?.offset], [0, 0], 'a new stream stands at 0, with an epoch')
    await bus.append(event(['chat:a', 'consoles'], 'one'))
    const two = event(['chat:a'], 'two')
    await bus.append(two)
    while (packets.length < 3) await new Promise((resolve) => setTimeout(resolve, 5))
    // Order holds within a stream; across streams (on a cluster, across shards) it may not.
    const decoded = packets.map(([topic, packet]) => [topic, decodePacket(packet), packet] as const)
    const chat = decoded.filter(([topic]) => topic === 'chat:a')
    t.same(decoded.map(([topic, packet]) => `${topic}@${String(packet.offset)}`).sort(), ['chat:a@1', 'chat:a@2', 'consoles@1'])
    t.same(chat.map(([, packet]) => packet.offset), [1, 2], 'in offset order within the stream')
    t.equal(chat[0]?.[1].epoch, a?.epoch, 'the epoch of the position read before')
    const frame = JSON.parse(chat[1]?.[1].frame.toString() ?? '{}')
    t.same([frame.stream, frame.offset, frame.data.message.text], ['chat:a', 2, 'two'], 'stream and offset in the frame itself')
    const expected = durablePacket(two.appends[0]?.routingHead as string, two.payloads[0]?.[0] as string, '"chat:a"', a?.epoch as string, 2)
    t.ok(chat[1]?.[2].equals(expected), 'the bytes are packet.ts durablePacket, byte for byte')
  })

  t.test(`${name}: numbered messages take their chat's counter in the append, each chat counting on its own`, async (t) => {
    const bus = await make(t)
    const numbers = [
      await bus.append(event(['chat:a'], 'x', 'a')), await bus.append(event(['chat:a'], 'y', 'a')),
      await bus.append(event(['chat:b'], 'z', 'b')), await bus.append(event(['chat:a'], 'w', 'a'))
    ]
    t.same(numbers, [1, 2, 1, 3])
    const read = await bus.read('chat:a', { after: 0, limit: 10 })
    t.same(read.packets.map((packet) => JSON.parse(decodePacket(packet).frame.toString()).data.message.id), [1, 2, 3], 'the number is in the frame')
  })

  t.test(`${name}: read gives the events after an offset, oldest first or newest first, up to a bound`, async (t) => {
    const bus = await make(t, 5)
    for (let index = 1; index <= 8; index++) await bus.append(event(['chat:r'], String(index)))
    const after = await bus.read('chat:r', { after: 5, limit: 10 })
    t.same([after.position.offset, after.offsets], [8, [6, 7, 8]])
    const newest = await bus.read('chat:r', { after: 0, upTo: 7, limit: 2, newest: true })
    t.same(newest.offsets, [6, 7], 'the last 2 up to 7, in offset order')
    // Redis trims approximately (whole nodes of ~100 entries): enough events that a node goes.
    for (let index = 9; index <= 250; index++) await bus.append(event(['chat:r'], String(index)))
    const trimmed = await bus.read('chat:r', { after: 0, limit: 10 })
    t.ok((trimmed.offsets[0] ?? 0) > 1, `history keeps about HISTORY_SIZE: it starts at ${String(trimmed.offsets[0])}`)
  })
}

streamSuite(t, 'memory', async (t, size) => {
  const bus = new MemoryBus(size === undefined ? {} : { size })
  t.teardown(async () => await bus.close())
  return bus
})

streamSuite(t, 'redis', async (t, size) => await redisBus(t, await startRedis(t), undefined, size ?? 100))

let sharedCluster: Promise<RedisCluster> | undefined
streamSuite(t, 'redis-cluster', async (test, size) => {
  // One cluster for the file (torn down with it), a fresh prefix per test.
  sharedCluster ??= startRedisCluster(t)
  const cluster = await sharedCluster
  return await clusterBus(test, cluster, { prefix: cluster.prefix(), retention: { size: size ?? 100, ttlSeconds: 600, positionTtlSeconds: 3600 }, replicaAcks: { replicas: 1, timeoutMs: 500 } })
})

t.test('redis: a stream below the offset a reader holds (Redis back from an older snapshot) gets a new epoch', async (t) => {
  const redis = await startRedis(t)
  const bus = await redisBus(t, redis)
  for (let index = 0; index < 3; index++) await bus.append(event(['chat:s'], String(index)))
  const [before] = await bus.positions(['chat:s'])
  const unchanged = await bus.read('chat:s', { after: 3, limit: 10, known: 3 })
  t.equal(unchanged.position.epoch, before?.epoch, 'holding the top changes nothing')
  const read = await bus.read('chat:s', { after: 5, limit: 10, known: 5 })
  t.not(read.position.epoch, before?.epoch, 'holding 5 of a stream at 3: the epoch changed')
  t.same((await bus.read('chat:s', { after: 0, limit: 10 })).offsets, [], 'and the old epoch\'s history is gone')
})
