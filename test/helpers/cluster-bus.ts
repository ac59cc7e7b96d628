import type { Cluster } from 'ioredis'
import { RedisBus, type RedisBusOptions } from '../../src/stores/bus-redis.js'
import { createNodeClient, createRedisCluster } from '../../src/stores/redis.js'
import { ShardedSubscriber } from '../../src/stores/sharded-subscriber.js'
import type { RedisCluster } from './redis-ha.js'
import type { Tap } from './relay.js'

const silent = { info: () => {}, warn: () => {}, error: () => {} }

/** A RedisBus on a Redis Cluster as the relay builds it: ioredis Cluster for commands, sharded pub/sub for delivery. */
export async function clusterBus (t: Tap, cluster: RedisCluster, options: Partial<RedisBusOptions> & { prefix: string }): Promise<RedisBus> {
  const connection = { retryMaxMs: 100, commandTimeoutMs: 1000 }
  const target = { mode: 'cluster' as const, nodes: cluster.nodes }
  const publisher = createRedisCluster(target, { ...connection, role: 'publish' })
  const subscriber = new ShardedSubscriber(publisher, (address) => createNodeClient(address, target, { ...connection, role: 'subscribe' }), options.log ?? silent, 1000)
  publisher.on('error', () => {})
  subscriber.on('error', () => {})
  const bus = new RedisBus({ settleMs: 0, pingIntervalMs: 200, log: silent, ...options, publisher, subscriber, sharded: true })
  t.teardown(async () => {
    await bus.close()
    subscriber.disconnect()
    publisher.disconnect()
  })
  const started = Date.now()
  while (!bus.isReady()) {
    if (Date.now() - started > 10_000) throw new Error('the cluster bus did not get ready')
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  return bus
}

/** A cluster command client as the relay makes one, once it is ready; disconnected in teardown. */
export async function readyClusterClient (t: Tap, cluster: RedisCluster, role: string, commandTimeoutMs = 1000): Promise<Cluster> {
  const client = createRedisCluster({ mode: 'cluster', nodes: cluster.nodes }, { retryMaxMs: 100, commandTimeoutMs, role })
  t.teardown(() => { client.disconnect() })
  const started = Date.now()
  while (client.status !== 'ready') {
    if (Date.now() - started > 10_000) throw new Error(`the cluster client did not get ready (${client.status})`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  return client
}
