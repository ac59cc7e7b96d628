import t from 'tap'
import { closeAll, join } from './helpers/client.js'
import { FAST_REDIS_ENV, waitForBus } from './helpers/cluster.js'
import { startRedisCluster, type RedisCluster } from './helpers/redis-ha.js'
import { customerToken, operatorToken, startRelay, type Relay, type Tap } from './helpers/relay.js'
import { chatOf, messageOf, routingSuite } from './helpers/routing-suite.js'

/** Relay nodes on a Redis Cluster (REDIS_CLUSTER_NODES), one fresh prefix, each with its bus ready. */
async function clusterNodes (t: Tap, cluster: RedisCluster, count: number, env: Record<string, string> = {}): Promise<Relay[]> {
  const shared = { REDIS_CLUSTER_NODES: cluster.nodesEnv, REDIS_PREFIX: cluster.prefix(), ...FAST_REDIS_ENV, ...env }
  const nodes: Relay[] = []
  for (let index = 0; index < count; index++) nodes.push(await startRelay(t, shared))
  await Promise.all(nodes.map(async (node) => await waitForBus(node, 'ready', 15_000)))
  return nodes
}

let shared: Promise<RedisCluster> | undefined
/** One cluster for the file, torn down with it; each test takes a fresh prefix. */
const theCluster = async (): Promise<RedisCluster> => await (shared ??= startRedisCluster(t))

t.test('routing on a Redis Cluster with three nodes: sockets on nodes 1 and 2, events posted to node 0', async (t) => {
  routingSuite(t, async (test) => {
    const [ingest, ...socketNodes] = await clusterNodes(test, await theCluster(), 3)
    if (ingest === undefined) throw new Error('no ingest node')
    return { socketUrls: socketNodes.map((node) => node.wsUrl), post: ingest.post }
  })
})

t.test('on a cluster the node reports its mode, and frames of every length form reach sockets byte-exact', async (t) => {
  const [ingest, customerNode, consoleNode] = await clusterNodes(t, await theCluster(), 3)
  if (ingest === undefined || customerNode === undefined || consoleNode === undefined) throw new Error('three nodes expected')
  const metrics = (await ingest.app.inject({ method: 'GET', url: '/metrics' })).body
  t.match(metrics, /relay_redis_info\{mode="cluster"\} 1/)
  const customer = await join(customerNode.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const operatorConsole = await join(consoleNode.wsUrl, '/broadcast', { token: operatorToken(2) })
  t.teardown(() => closeAll(customer, operatorConsole))
  const texts = ['short', 'ü€😀'.repeat(20), 'x'.repeat(70_000), ...Array.from({ length: 20 }, (_, index) => `burst ${index}`)]
  const messages = texts.map((text, index) => messageOf(chatOf('c1'), { id: 9000 + index, text }))
  for (const message of messages) t.equal((await ingest.post('/message', { message })).statusCode, 200)
  for (const client of [customer, operatorConsole]) {
    await client.waitFor((frame) => frame.data?.message?.id === 9000 + texts.length - 1, 5000, `${client.name} gets the last message`)
    const received = client.ofType('message_added').map((frame) => frame.data.message.text)
    t.same(received, texts, `${client.name}: every frame, byte-exact, in order`)
  }
})
