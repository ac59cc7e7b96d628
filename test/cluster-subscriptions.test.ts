import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import t from 'tap'
import { audienceTopics, Topic } from '../src/protocol/routing.js'
import { closeAll, join } from './helpers/client.js'
import { eventually, startCluster } from './helpers/cluster.js'
import { startRedis } from './helpers/redis.js'
import { customerToken, operatorToken } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

t.test('a chat with a widget travels on its widget lane and the any-widget lane; one without on every console', async (t) => {
  t.same(audienceTopics({ scope: 'sources', chat: { uuid: 'c', widget: 'lk' } }), [Topic.widget('lk'), Topic.anyWidget])
  t.same(audienceTopics({ scope: 'sources', chat: { uuid: 'c', department: '7' } }), [Topic.consoles])
  t.same(audienceTopics({ scope: 'broadcast' }), [Topic.consoles])
  t.same(audienceTopics({ scope: 'chat', chat: 'c', role: 'operator' }), [Topic.chat('c')])
  t.same(audienceTopics({ scope: 'operator', operatorId: '5' }), [Topic.operator('5')])
  t.not(Topic.widget('lk'), Topic.widget('site'))
})

t.test('a node subscribes to what its sockets can see, and lets go when they leave', async (t) => {
  const redis = await startRedis(t)
  const [node] = await startCluster(t, redis, 1)
  if (node === undefined) throw new Error('no node')
  const prefix = node.config.REDIS_PREFIX
  const probe = new Redis(redis.url)
  t.teardown(() => probe.disconnect())
  const channels = async (): Promise<string[]> =>
    // The bus's own probe channel (see RedisBus pingIntervalMs) is not a topic.
    (await probe.pubsub('CHANNELS', `${prefix}*`) as string[]).map((channel) => channel.slice(prefix.length))
      .filter((channel) => !channel.startsWith('probe:')).sort()

  const chat = randomUUID()
  const filtered = await join(node.wsUrl, '/broadcast', { token: operatorToken(71, { sources: { widgets: ['lk'] } }) })
  const customer = await join(node.wsUrl, '/chat', { token: customerToken(72, chat) })
  t.same(await channels(), [Topic.chat(chat), Topic.consoles, Topic.operator('71'), Topic.widget('lk')].sort(),
    'a console filtered to lk: its widget, every-console and its operator topics, and the chat room')
  t.notOk((await channels()).includes(Topic.anyWidget), 'no any-widget lane without an unfiltered console')
  t.same(node.app.sockets.hub.topics().sort(), await channels(), 'the hub needs exactly what the node is subscribed to')

  const unfiltered = await join(node.wsUrl, '/broadcast', { token: operatorToken(73) })
  t.ok((await channels()).includes(Topic.anyWidget), 'an unfiltered console needs every widget')

  closeAll(unfiltered, customer)
  await eventually(async () => {
    const now = await channels()
    return !now.includes(Topic.anyWidget) && !now.includes(Topic.chat(chat))
  }, 3000, 'unsubscribed after the last socket of a topic left')
  t.same(await channels(), [Topic.consoles, Topic.operator('71'), Topic.widget('lk')].sort(), 'what the remaining console needs stays')
  closeAll(filtered)
  await eventually(async () => (await channels()).length === 0, 3000, 'nothing subscribed without sockets')
  t.pass('no channel left once every socket is gone')
})

t.test('a console gets a widget chat once, whichever lanes its node listens on', async (t) => {
  const redis = await startRedis(t)
  const [ingest, node] = await startCluster(t, redis, 2)
  if (ingest === undefined || node === undefined) throw new Error('no nodes')
  const unfiltered = await join(node.wsUrl, '/broadcast', { token: operatorToken(81) })
  const lk = await join(node.wsUrl, '/broadcast', { token: operatorToken(82, { sources: { widgets: ['lk', 'site'] } }) })
  const other = await join(node.wsUrl, '/broadcast', { token: operatorToken(83, { sources: { widgets: ['other'] } }) })
  t.teardown(() => closeAll(unfiltered, lk, other))
  const chat = chatOf(randomUUID(), { widget: { source: 'lk' } })
  const message = messageOf(chat)
  t.equal((await ingest.post('/message', { message })).statusCode, 200)
  const marker = randomUUID()
  t.equal((await ingest.post('/global', { marker })).statusCode, 200)
  for (const client of [unfiltered, lk, other]) await client.waitFor((frame) => frame.data?.marker === marker)
  const copies = (client: typeof lk): number => client.ofType('message_added').filter((frame) => frame.data.message.id === message.id).length
  t.equal(copies(unfiltered), 1, 'the unfiltered console gets it once')
  t.equal(copies(lk), 1, 'the lk console gets it once')
  t.equal(copies(other), 0, 'a console of another widget does not get it')
})
