import { Redis } from 'ioredis'
import t from 'tap'
import type { BusState } from '../src/stores/bus.js'
import { BusUnavailableError } from '../src/stores/store-errors.js'
import { RedisBus } from '../src/stores/bus-redis.js'
import { createRedisClient } from '../src/stores/redis.js'
import { startRedis, type PrivateRedis } from './helpers/redis.js'

const silent = { info: () => {}, warn: () => {}, error: () => {} }
const EVENTS = ['ready', 'close', 'error', 'messageBuffer', 'end', 'reconnecting']

function clients (t: Parameters<typeof startRedis>[0], redis: PrivateRedis): { publisher: Redis, subscriber: Redis } {
  const options = { retryMaxMs: 100, commandTimeoutMs: 1000 }
  const publisher = createRedisClient(redis.url, { ...options, role: 'publish' })
  const subscriber = createRedisClient(redis.url, { ...options, role: 'subscribe' })
  t.teardown(() => {
    publisher.disconnect()
    subscriber.disconnect()
  })
  return { publisher, subscriber }
}

/** Resolves on the first state change to `state`; fails after `ms`. */
async function reaches (bus: RedisBus, state: BusState, ms = 5000): Promise<void> {
  if (bus.isReady() === (state === 'ready')) return
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`bus not ${state} within ${ms} ms`)), ms)
    bus.onStateChange((reached) => {
      if (reached !== state) return
      clearTimeout(timer)
      resolve()
    })
  })
}

/** Resolves with the next packet on `topic`; fails after `ms`. */
async function nextPacket (bus: RedisBus, topic: string, ms = 3000): Promise<string> {
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no packet on ${topic} within ${ms} ms`)), ms)
    bus.onPacket((receivedOn, packet) => {
      if (receivedOn !== topic) return
      clearTimeout(timer)
      resolve(packet.toString())
    })
  })
}

t.test('publishes reach subscribers of the topic under the prefix, and only them', async (t) => {
  const redis = await startRedis(t)
  const prefix = redis.prefix()
  const bus = new RedisBus({ ...clients(t, redis), prefix, settleMs: 0, pingIntervalMs: 200, log: silent })
  const otherPrefix = new RedisBus({ ...clients(t, redis), prefix: redis.prefix(), settleMs: 0, pingIntervalMs: 200, log: silent })
  t.teardown(async () => { await bus.close(); await otherPrefix.close() })
  await Promise.all([reaches(bus, 'ready'), reaches(otherPrefix, 'ready')])
  await bus.subscribe('chat:a')
  await otherPrefix.subscribe('chat:a')
  const seenByOtherPrefix: string[] = []
  otherPrefix.onPacket((_topic, packet) => seenByOtherPrefix.push(packet.toString()))
  const arrived = nextPacket(bus, 'chat:a')
  await bus.publish('chat:b', Buffer.from('not subscribed'))
  await bus.publish('chat:a', Buffer.from('hello'))
  t.equal(await arrived, 'hello', 'the subscribed topic arrives, the other does not come first')
  t.same(seenByOtherPrefix, [], 'a relay on another prefix sees nothing')
})

t.test('with Redis down a publish fails at once with BusUnavailableError, and the state says down', async (t) => {
  const redis = await startRedis(t)
  const bus = new RedisBus({ ...clients(t, redis), prefix: redis.prefix(), settleMs: 0, pingIntervalMs: 200, log: silent })
  t.teardown(async () => await bus.close())
  await reaches(bus, 'ready')
  const down = reaches(bus, 'down')
  await redis.kill()
  await down
  t.notOk(bus.isReady())
  const started = Date.now()
  await t.rejects(bus.publish('chat:a', Buffer.from('x')), BusUnavailableError)
  t.ok(Date.now() - started < 100, 'no waiting for a Redis that is not there')
})

t.test('a Redis that stops answering is noticed by the idle subscriber too, and the bus comes back when it answers', async (t) => {
  const redis = await startRedis(t)
  const prefix = redis.prefix()
  const bus = new RedisBus({ ...clients(t, redis), prefix, settleMs: 0, pingIntervalMs: 200, log: silent })
  t.teardown(async () => await bus.close())
  await reaches(bus, 'ready')
  await bus.subscribe('chat:a')
  redis.pause()
  t.teardown(() => redis.resume())
  // Nothing is published: only the subscriber's ping can find out (ping interval + command timeout).
  await reaches(bus, 'down', 3000)
  t.notOk(bus.isReady(), 'down while Redis is silent')
  redis.resume()
  await reaches(bus, 'ready', 5000)
  const arrived = nextPacket(bus, 'chat:a')
  await bus.publish('chat:a', Buffer.from('again'))
  t.equal(await arrived, 'again', 'resubscribed on the new connection')
})

t.test('after a Redis restart it resubscribes every topic it holds by itself, and not the ones it let go', async (t) => {
  const redis = await startRedis(t)
  const prefix = redis.prefix()
  const bus = new RedisBus({ ...clients(t, redis), prefix, settleMs: 50, pingIntervalMs: 200, log: silent })
  t.teardown(async () => await bus.close())
  await reaches(bus, 'ready')
  await bus.subscribe('chat:kept')
  await bus.subscribe('chat:dropped')
  await redis.kill()
  await reaches(bus, 'down')
  await bus.unsubscribe('chat:dropped')
  await bus.subscribe('chat:added-while-down')
  await redis.restart()
  await reaches(bus, 'ready')
  const probe = new Redis(redis.url)
  t.teardown(() => probe.disconnect())
  const channels = (await probe.pubsub('CHANNELS', `${prefix}*`) as string[]).sort()
  t.same(channels.filter((channel) => !channel.startsWith(`${prefix}probe:`)), [`${prefix}chat:added-while-down`, `${prefix}chat:kept`], 'exactly the topics held now')
  t.equal(channels.filter((channel) => channel.startsWith(`${prefix}probe:`)).length, 1, 'and its probe channel')
  const arrived = nextPacket(bus, 'chat:kept')
  await bus.publish('chat:kept', Buffer.from('back'))
  t.equal(await arrived, 'back')
})

t.test('after a reconnect it publishes at once but announces only once the other nodes had time to resubscribe', async (t) => {
  const redis = await startRedis(t)
  const bus = new RedisBus({ ...clients(t, redis), prefix: redis.prefix(), settleMs: 0, announceSettleMs: 400, pingIntervalMs: 200, log: silent })
  t.teardown(async () => await bus.close())
  await reaches(bus, 'ready')
  t.ok(bus.canAnnounce(), 'the first connect announces at once: no node was subscribed before it')
  await redis.kill()
  await reaches(bus, 'down')
  t.notOk(bus.canAnnounce(), 'nothing is announced while Redis is away')
  await redis.restart()
  await reaches(bus, 'ready')
  const back = Date.now()
  t.ok(bus.isReady(), 'durable events go out at once: other nodes read back what they miss')
  t.notOk(bus.canAnnounce(), 'announcements wait: other nodes may still be resubscribing')
  while (!bus.canAnnounce()) await new Promise((resolve) => setTimeout(resolve, 20))
  t.ok(Date.now() - back >= 300, 'announcements resume after the settle window')
})

t.test('a subscription that dies while its connection stays up is found by the probe, reported and replaced', async (t) => {
  const redis = await startRedis(t)
  const { publisher, subscriber } = clients(t, redis)
  const seen = { probeFailed: 0, resubscribed: 0 }
  const states: BusState[] = []
  const bus = new RedisBus({
    publisher,
    subscriber,
    prefix: redis.prefix(),
    settleMs: 0,
    pingIntervalMs: 100,
    log: silent,
    events: { probeFailed: () => { seen.probeFailed += 1 }, resubscribed: () => { seen.resubscribed += 1 } }
  })
  t.teardown(async () => await bus.close())
  bus.onStateChange((state) => states.push(state))
  await reaches(bus, 'ready')
  await bus.subscribe('chat:a')
  await new Promise((resolve) => setTimeout(resolve, 350))
  t.equal(seen.probeFailed, 0, 'probes come back while the subscription lives')
  // What a server-side unsubscribe (a cluster's sunsubscribe on a slot move) looks like to the client.
  await subscriber.unsubscribe()
  await reaches(bus, 'down')
  t.equal(seen.probeFailed, 1, 'the missing probe was reported once')
  await reaches(bus, 'ready')
  t.ok(seen.resubscribed >= 2, 'resubscribed on the new connection')
  const arrived = nextPacket(bus, 'chat:a')
  await bus.publish('chat:a', Buffer.from('back'))
  t.equal(await arrived, 'back', 'its topics reach it again')
  t.same(states.slice(-2), ['down', 'ready'], '/ready said 503 meanwhile')
})

t.test('close unsubscribes and removes exactly the listeners it added', async (t) => {
  const redis = await startRedis(t)
  const { publisher, subscriber } = clients(t, redis)
  const foreign = (): void => {}
  subscriber.on('messageBuffer', foreign)
  publisher.on('ready', foreign)
  const count = (client: Redis): number[] => EVENTS.map((event) => client.listenerCount(event))
  const before = { publisher: count(publisher), subscriber: count(subscriber) }
  const prefix = redis.prefix()
  const bus = new RedisBus({ publisher, subscriber, prefix, settleMs: 0, pingIntervalMs: 200, log: silent })
  await reaches(bus, 'ready')
  await bus.subscribe('chat:a')
  t.not(count(subscriber).join(), before.subscriber.join(), 'the bus listens while open')
  await bus.close()
  t.same(count(publisher), before.publisher, 'the publisher has exactly the listeners it had before')
  t.same(count(subscriber), before.subscriber, 'the subscriber too: the owner\'s own listener is still there')
  t.equal(subscriber.listeners('messageBuffer')[0], foreign)
  t.same(await publisher.pubsub('CHANNELS', `${prefix}*`), [], 'nothing left subscribed')
  t.equal(publisher.status, 'ready', 'the connections stay open: their owner closes them')
})
