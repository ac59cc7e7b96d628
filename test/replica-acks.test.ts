import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import t from 'tap'
import { join } from './helpers/client.js'
import { eventually, FAST_REDIS_ENV, waitForBus } from './helpers/cluster.js'
import { startRedis } from './helpers/redis.js'
import { customerToken, startRelay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

// REDIS_REPLICA_ACKS: a durable event is acknowledged only once that many replicas hold it (WAIT), so a
// failover cannot lose what a backend was told was published.

t.test('with REDIS_REPLICA_ACKS=1 an event is 503 and unpublished until a replica holds it; its retry is then 200 and publishes it once', async (t) => {
  const primary = await startRedis(t)
  const replica = await startRedis(t)
  const prefix = primary.prefix()
  const relay = await startRelay(t, { REDIS_URL: primary.url, REDIS_PREFIX: prefix, ...FAST_REDIS_ENV, REDIS_REPLICA_ACKS: '1' })
  await waitForBus(relay, 'ready')
  const chat = randomUUID()
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(5, chat) })
  t.teardown(() => customer.close())
  const message = messageOf(chatOf(chat), { type_role: 'user' })
  const key = randomUUID()
  const post = async (): Promise<{ statusCode: number, body: string }> =>
    await relay.app.inject({ method: 'POST', url: '/message', headers: { 'api-token': 'test-api-token-primary', 'idempotency-key': key }, payload: { message } })

  const alone = await post()
  t.equal(alone.statusCode, 503, 'no replica: not acknowledged')
  t.match(alone.body, /held by 0 of 1 replicas/, 'the answer says why')
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.same(customer.frames.filter((frame) => frame.type === 'message_added'), [],
    'not published either: a failover could lose it, and a promoted replica would reuse its offset')

  const admin = new Redis(replica.url)
  t.teardown(() => admin.disconnect())
  await admin.replicaof('127.0.0.1', String(primary.port))
  await eventually(async () => /master_link_status:up/.test(await admin.info('replication')), 10_000, 'the replica in sync')

  // A backend retries with the same key; on a loaded machine the first WAIT after the sync may still time out.
  let again = await post()
  const deadline = Date.now() + 10_000
  while (again.statusCode === 503 && Date.now() < deadline) again = await post()
  t.equal(again.statusCode, 200, 'the retry is acknowledged once the replica holds the event')
  const fresh = await relay.app.inject({ method: 'POST', url: '/message', headers: { 'api-token': 'test-api-token-primary' }, payload: { message: messageOf(chatOf(chat), { type_role: 'user' }) } })
  t.equal(fresh.statusCode, 200, 'and the next events at once')
  await eventually(async () => customer.frames.filter((frame) => frame.type === 'message_added').length >= 2, 3000, 'both messages delivered')
  const ids = customer.frames.filter((frame) => frame.type === 'message_added').map((frame) => frame.data?.message?.id)
  t.equal(ids.filter((id) => id === message.id).length, 1, 'the first event was published once, its retry added nothing')
  const history = await admin.xlen(`${prefix}history:chat:${chat}`)
  t.equal(history, 2, 'the replica holds both events of the stream')
  const metrics = (await relay.app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /relay_redis_info\{mode="single"\} 1/, 'the Redis mode is on /metrics')
  t.match(metrics, /relay_bus_resubscribes_total [1-9]/, 'the first subscription counted')
  t.match(metrics, /relay_bus_probe_failures_total 0/, 'its probes all came back')
})
