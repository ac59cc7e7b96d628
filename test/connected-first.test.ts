import t, { type Test } from 'tap'
import { closeAll, connect, type TestClient } from './helpers/client.js'
import { startCluster } from './helpers/cluster.js'
import { startRedis } from './helpers/redis.js'
import { customerToken, operatorToken, startRelay, type Relay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

/**
 * `connected` is the first frame on every node and bus (SPEC Clarifications): a socket opened on a node
 * that already carries traffic for its topics must not receive an event before it.
 */
async function openUnderTraffic (t: Test, post: Relay['post'], socketUrl: string): Promise<void> {
  let posting = true
  let posted = 0
  const traffic = (async () => {
    while (posting) {
      await Promise.all([
        post('/global', { tick: posted }),
        post('/message', { message: messageOf(chatOf('busy'), { id: 100_000 + posted, text: `tick ${posted}` }) })
      ])
      posted += 1
    }
  })()
  const clients: TestClient[] = []
  t.teardown(() => closeAll(...clients))
  try {
    // Waves of sockets while events flow: consoles (global_updated) and customers of the busy chat.
    for (let wave = 0; wave < 10; wave++) {
      for (let index = 0; index < 5; index++) {
        const id = wave * 10 + index
        clients.push(connect(socketUrl, '/broadcast', { token: operatorToken(1000 + id), name: `console ${id}` }))
        clients.push(connect(socketUrl, '/chat', { token: customerToken(2000 + id, 'busy'), name: `customer ${id}` }))
      }
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    await Promise.all(clients.map(async (client) => await client.next('connected', 10_000)))
    // Each socket must then see traffic too, or the check below proves nothing.
    await Promise.all(clients.map(async (client) => await client.waitFor((f) => f.type !== 'connected', 10_000, 'an event')))
  } finally {
    posting = false
    await traffic
  }
  const early = clients.filter((client) => client.frames[0]?.type !== 'connected')
  t.same(early.map((client) => `${client.name}: ${String(client.frames[0]?.type)}`), [], `connected first on all ${clients.length} sockets (${posted} rounds posted meanwhile)`)
}

t.test('embedded bus: 100 sockets opened under traffic each get connected first', async (t) => {
  const relay = await startRelay(t)
  await openUnderTraffic(t, relay.post, relay.wsUrl)
})

t.test('Redis, two nodes: 100 sockets opened on a node under traffic posted to the other get connected first', async (t) => {
  const redis = await startRedis(t)
  const [ingest, sockets] = await startCluster(t, redis, 2)
  if (ingest === undefined || sockets === undefined) throw new Error('two nodes expected')
  // The node already holds the topics (a console and a customer stay open), as in production.
  const holders = [await connect(sockets.wsUrl, '/broadcast', { token: operatorToken(1) }), await connect(sockets.wsUrl, '/chat', { token: customerToken(2, 'busy') })]
  t.teardown(() => closeAll(...holders))
  await Promise.all(holders.map(async (client) => await client.next('connected')))
  await openUnderTraffic(t, ingest.post, sockets.wsUrl)
})
