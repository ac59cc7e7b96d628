import t from 'tap'
import { closeAll, join } from './helpers/client.js'
import { startCluster } from './helpers/cluster.js'
import { startRedis } from './helpers/redis.js'
import { customerToken, operatorToken } from './helpers/relay.js'
import { chatOf, messageOf, routingSuite } from './helpers/routing-suite.js'

t.test('routing over Redis with three nodes: sockets on nodes 1 and 2, events posted to node 0', async (t) => {
  routingSuite(t, async (t) => {
    const redis = await startRedis(t)
    const [ingest, ...socketNodes] = await startCluster(t, redis, 3)
    if (ingest === undefined) throw new Error('no ingest node')
    return { socketUrls: socketNodes.map((node) => node.wsUrl), post: ingest.post }
  })
})

t.test('routing with console lanes (CONSOLE_LANES=3) on three nodes of one Redis', async (t) => {
  routingSuite(t, async (t) => {
    const redis = await startRedis(t)
    const [ingest, ...socketNodes] = await startCluster(t, redis, 3, { CONSOLE_LANES: '3' })
    if (ingest === undefined) throw new Error('no ingest node')
    return { socketUrls: socketNodes.map((node) => node.wsUrl), post: ingest.post }
  })
})

t.test('frames of every length form cross the bus and reach sockets byte-exact and in order', async (t) => {
  const redis = await startRedis(t)
  const [ingest, customerNode, consoleNode] = await startCluster(t, redis, 3)
  if (ingest === undefined || customerNode === undefined || consoleNode === undefined) throw new Error('three nodes expected')
  const customer = await join(customerNode.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const operatorConsole = await join(consoleNode.wsUrl, '/broadcast', { token: operatorToken(2) })
  t.teardown(() => closeAll(customer, operatorConsole))
  // Text sizes put the frame in the 7-bit, 16-bit and 64-bit length forms; multi-byte text counts in bytes.
  const texts = ['short', 'ü€😀'.repeat(20), 'x'.repeat(70_000), '😀'.repeat(20_000), ...Array.from({ length: 40 }, (_, index) => `burst ${index}`)]
  const messages = texts.map((text, index) => messageOf(chatOf('c1'), { id: 9000 + index, text }))
  for (const message of messages) t.equal((await ingest.post('/message', { message })).statusCode, 200)
  for (const client of [customer, operatorConsole]) {
    await client.waitFor((frame) => frame.data?.message?.id === 9000 + texts.length - 1, 5000, `${client.name} gets the last message`)
    const received = client.ofType('message_added').map((frame) => frame.data.message)
    t.same(received.map((message) => message.id), messages.map((message) => message.id), `${client.name}: every message, in publish order`)
    t.ok(received.every((message, index) => message.text === texts[index]), `${client.name}: every text byte-exact`)
  }
})
