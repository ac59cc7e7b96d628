import t from 'tap'
import { startCluster } from './helpers/cluster.js'
import { startRedis } from './helpers/redis.js'
import { routingSuite } from './helpers/routing-suite.js'

t.test('routing over Redis with three nodes: sockets on nodes 1 and 2, events posted to node 0', async (t) => {
  routingSuite(t, async (t) => {
    const redis = await startRedis(t)
    const [ingest, ...socketNodes] = await startCluster(t, redis, 3)
    if (ingest === undefined) throw new Error('no ingest node')
    return { socketUrls: socketNodes.map((node) => node.wsUrl), post: ingest.post }
  })
})
