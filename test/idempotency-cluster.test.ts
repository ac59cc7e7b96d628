import { randomUUID } from 'node:crypto'
import type { Cluster } from 'ioredis'
import t, { type Test } from 'tap'
import { slotOf } from '../src/stores/cluster-slot.js'
import { RedisIdempotency } from '../src/stores/idempotency-redis.js'
import type { IdempotencyClaim } from '../src/stores/idempotency.js'
import { LuaScript } from '../src/stores/redis.js'
import { IdempotencyUnavailableError } from '../src/stores/store-errors.js'
import { startRedisCluster } from './helpers/redis-ha.js'
import { readyClusterClient } from './helpers/cluster-bus.js'
import { storeContract } from './helpers/idempotency-contract.js'

// Ingest idempotency through a Cluster client on a real 3-master Redis Cluster: the store contract of
// test/idempotency.test.ts, the same key names as on one Redis, and one slot per script call.

const cluster = await startRedisCluster(t)

const readyCluster = async (t: Test, role = 'idempotency-test'): Promise<Cluster> => await readyClusterClient(t, cluster, role, 1000)



t.test('store contract: redis cluster, sharded and not (the option changes nothing)', async (t) => {
  const client = await readyCluster(t)
  for (const sharded of [true, false]) {
    await t.test(`sharded: ${String(sharded)}`, async (t) => {
      await storeContract(t, new RedisIdempotency({ client, prefix: cluster.prefix(), sharded }))
      // A client's key may hold a hash tag: it only picks the record's slot.
      await storeContract(t, new RedisIdempotency({ client, prefix: cluster.prefix(), sharded }), `{${randomUUID()}}:tagged`)
    })
  }
})

t.test('redis cluster: records keep their names, <prefix>idem:<route>:<key>, spread over the masters', async (t) => {
  const client = await readyCluster(t)
  const prefix = cluster.prefix()
  const store = new RedisIdempotency({ client, prefix, sharded: true })
  await store.claim({ route: '/global', key: 'a:b', token: 't', bodyHash: 'h' }, 10_000)
  t.equal(await client.exists(`${prefix}idem:/global:a:b`), 1, 'the record is at <prefix>idem:<route>:<key>')
  const ttl = await client.pttl(`${prefix}idem:/global:a:b`)
  t.ok(ttl > 0 && ttl <= 10_000, 'a pending marker carries its lease as TTL')
  const keys = Array.from({ length: 30 }, (_, index) => `spread-${index}`)
  for (const key of keys) await store.claim({ route: '/global', key, token: 't', bodyHash: 'h' }, 10_000)
  const held = await Promise.all(client.nodes('master').map(async (node) => (await node.keys(`${prefix}idem:/global:spread-*`)).length))
  t.equal(held.reduce((sum, count) => sum + count, 0), keys.length, 'every record is on the master of its slot')
  t.ok(held.filter((count) => count > 0).length > 1, `the records are spread over the masters (${held.join(', ')})`)
})

t.test('redis cluster: every script call has one key (one slot)', async (t) => {
  const client = await readyCluster(t)
  const calls: string[][] = []
  const prototype = LuaScript.prototype as unknown as Record<string, unknown>
  for (const name of Object.getOwnPropertyNames(LuaScript.prototype)) {
    const original = prototype[name]
    if (!name.startsWith('run') || typeof original !== 'function') continue
    prototype[name] = function (this: LuaScript, target: unknown, keys: string[], ...rest: unknown[]): unknown {
      calls.push([...keys])
      return original.call(this, target, keys, ...rest)
    }
    t.teardown(() => { prototype[name] = original })
  }
  const store = new RedisIdempotency({ client, prefix: cluster.prefix(), sharded: true })
  for (let index = 0; index < 20; index++) {
    const claim: IdempotencyClaim = { route: index % 2 === 0 ? '/global' : '/message', key: `k${index}`, token: 'x', bodyHash: 'h' }
    await store.claim(claim, 10_000)
    await store.renew(claim, 10_000)
    if (index % 3 === 0) await store.release(claim)
    else await store.complete(claim, { status: 200, body: '{}' }, 10_000)
  }
  t.equal(calls.length, 60, 'claim, renew and complete or release: 60 calls')
  t.strictSame(calls.filter((keys) => keys.length !== 1 || new Set(keys.map(slotOf)).size !== 1), [], 'each call has exactly one key')
})

t.test('redis cluster: without a connection every operation fails with IdempotencyUnavailableError', async (t) => {
  const client = await readyCluster(t)
  const store = new RedisIdempotency({ client, prefix: cluster.prefix(), sharded: true })
  client.disconnect()
  const claim: IdempotencyClaim = { route: '/global', key: 'k', token: 't', bodyHash: 'h' }
  await t.rejects(store.claim(claim, 1000), IdempotencyUnavailableError)
  await t.rejects(store.renew(claim, 1000), IdempotencyUnavailableError)
  await t.rejects(store.complete(claim, { status: 200, body: '{}' }, 1000), IdempotencyUnavailableError)
  await t.rejects(store.release(claim), IdempotencyUnavailableError)
})
