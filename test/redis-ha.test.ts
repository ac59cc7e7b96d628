import { Cluster, Redis } from 'ioredis'
import t from 'tap'
import { clusterSlot, startRedisCluster, startSentinelRedis, type Address, type ClusterMaster } from './helpers/redis-ha.js'

const ownerOf = (masters: ClusterMaster[], slot: number): ClusterMaster | undefined =>
  masters.find((master) => master.slots.some(([start, end]) => slot >= start && slot <= end))

t.test('sentinel: the replica takes over a killed primary, keeps acknowledged writes, and clients follow it', async (t) => {
  const started = Date.now()
  const ha = await startSentinelRedis(t)
  t.comment(`sentinel topology up in ${Date.now() - started} ms`)
  t.equal(ha.sentinels.length, 3)
  t.equal(ha.sentinelsEnv, ha.sentinels.map(({ host, port }) => `${host}:${port}`).join(','))

  const client = new Redis({ sentinels: ha.sentinels, name: ha.name })
  t.teardown(() => client.disconnect())
  const prefix = ha.prefix()
  t.not(prefix, ha.prefix(), 'each prefix is fresh')
  await client.set(`${prefix}acknowledged`, 'kept')
  t.equal(await client.wait(1, 1000), 1, 'the replica acknowledged the write before the kill')

  const first = await ha.primary()
  const killed = await ha.killPrimary()
  t.same(killed, first, 'the killed node is the primary the sentinels reported')
  const failingOver = Date.now()
  const promoted = await ha.waitForFailover(killed, 20_000)
  t.comment(`failover took ${Date.now() - failingOver} ms`)
  t.not(promoted.port, killed.port, 'another node is primary')
  t.same(await ha.primary(), promoted)

  await client.set(`${prefix}after`, 'written')
  t.equal(await client.get(`${prefix}acknowledged`), 'kept', 'the acknowledged write survived the failover')
  const direct = new Redis(promoted)
  t.teardown(() => direct.disconnect())
  t.equal(await direct.get(`${prefix}after`), 'written', 'the sentinel client writes to the new primary')
  t.equal((await direct.role())[0], 'master')

  await ha.restartKilled()
  const back = new Redis(killed)
  t.teardown(() => back.disconnect())
  const [role, host, port] = await back.role() as [string, string, number]
  t.same({ role, host, port }, { role: 'slave', ...promoted }, 'the killed node came back as a replica of the new primary')
})

t.test('cluster: slots, resharding, a killed master and a manual failover', async (t) => {
  const started = Date.now()
  const cluster = await startRedisCluster(t)
  t.comment(`cluster up in ${Date.now() - started} ms`)
  t.equal(cluster.nodes.length, 6)

  const masters = await cluster.masters()
  t.equal(masters.length, 3, 'three masters')
  t.equal(masters.reduce((sum, master) => sum + master.slots.reduce((count, [start, end]) => count + end - start + 1, 0), 0), 16384,
    'the masters serve every slot')
  t.equal(cluster.nodesEnv, masters.map(({ host, port }) => `${host}:${port}`).join(','))
  t.equal((await cluster.replicas()).length, 3, 'three replicas')

  const client = new Cluster(cluster.nodes)
  t.teardown(() => client.disconnect())
  const admin = new Redis(cluster.nodes[0] as Address)
  t.teardown(() => admin.disconnect())
  const prefix = cluster.prefix()

  await t.test('clusterSlot agrees with CLUSTER KEYSLOT', async (t) => {
    const keys = [
      '', 'a', '123456789', '{}', '{', '}', '}{', 'a{}{b}', '{}{b}', 'a{b}c', '{a}', '{{a}}', 'a{b', 'a}b{c}', '{user1000}.following',
      '{user1000}.followers', 'foo{}bar', 'é{ü}', '日本語', 'key with spaces', '{a b}', '{{}}', '{}}', '{ }',
      ...Array.from({ length: 30 }, (_, i) => `${prefix}${i}{tag${i % 4}}`)
    ]
    t.equal(clusterSlot('123456789'), 0x31c3 % 16384, 'the CRC16 check value')
    const slots = await Promise.all(keys.map(async (key) => Number(await admin.cluster('KEYSLOT', key))))
    t.same(keys.map(clusterSlot), slots)
    t.equal(cluster.slotOf('{user1000}.following'), cluster.slotOf('{user1000}.followers'))
    t.equal(clusterSlot(Buffer.from([0xff, 0x7b, 0x01, 0x7d])), clusterSlot(Buffer.from([0x01])), 'bytes, hash tag and all')
  })

  const keys = Array.from({ length: 300 }, (_, i) => `${prefix}key-${i}`)
  await Promise.all(keys.map(async (key) => await client.set(key, key)))
  const owners = new Set(keys.map((key) => ownerOf(masters, clusterSlot(key))?.port))
  t.equal(owners.size, 3, 'the keys span every master')

  await t.test('a slot moves with its keys and stays readable', async (t) => {
    const tagged = Array.from({ length: 250 }, (_, i) => `{${prefix}moving}:${i}`)
    const slot = clusterSlot(tagged[0] as string)
    await Promise.all(tagged.map(async (key) => await client.set(key, key)))
    const from = ownerOf(await cluster.masters(), slot)
    const to = masters.find((master) => master.port !== from?.port)
    if (from === undefined || to === undefined) throw new Error('no owner or no target')
    t.equal(await cluster.migrateSlot(slot, from, to), 250, 'every key moved, in batches')
    t.equal(ownerOf(await cluster.masters(), slot)?.port, to.port, 'the target owns the slot')
    const target = new Redis(to)
    const source = new Redis(from)
    t.teardown(() => { target.disconnect(); source.disconnect() })
    t.equal(await target.cluster('COUNTKEYSINSLOT', slot), 250)
    t.equal(await source.cluster('COUNTKEYSINSLOT', slot), 0)
    t.same(await client.mget(...tagged), tagged, 'the cluster client follows the move')
  })

  await t.test('a killed master is replaced by its replica', async (t) => {
    const victim = (await cluster.masters())[0] as ClusterMaster
    const heir = (await cluster.replicas()).find((replica) => replica.masterId === victim.id)
    if (heir === undefined) throw new Error(`no replica of ${victim.port}`)
    const killedAt = Date.now()
    await cluster.killMaster(victim)
    await cluster.waitForHealthy(15_000)
    t.comment(`healthy again ${Date.now() - killedAt} ms after the kill`)
    const after = await cluster.masters()
    t.notOk(after.some((master) => master.port === victim.port), 'the dead master serves nothing')
    t.ok(after.some((master) => master.port === heir.port && master.slots.length > 0), 'its replica took its slots')
    t.same(await Promise.all(keys.map(async (key) => await client.get(key))), keys, 'every key is still readable')
  })

  await t.test('a manual failover promotes a replica', async (t) => {
    const [replica] = await cluster.replicas()
    if (replica === undefined) throw new Error('no replica left')
    await cluster.failover(replica)
    t.ok((await cluster.masters()).some((master) => master.port === replica.port), 'the cluster lists it as a master')
    const promoted = new Redis(replica)
    t.teardown(() => promoted.disconnect())
    t.equal((await promoted.role())[0], 'master')
    await client.set(`${prefix}after-failover`, 'ok')
    t.equal(await client.get(`${prefix}after-failover`), 'ok')
  })
})
