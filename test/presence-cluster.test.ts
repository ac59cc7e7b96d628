import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import type { Cluster } from 'ioredis'
import { RedisBus } from '../src/stores/bus-redis.js'
import { slotOf } from '../src/stores/cluster-slot.js'
import { createMetrics } from '../src/metrics.js'
import { decodePacket } from '../src/protocol/packet.js'
import { presencePackets, type ChatSocket, type ConsoleSession } from '../src/stores/presence.js'
import { PresenceKeys } from '../src/stores/presence-node.js'
import { RedisPresence } from '../src/stores/presence-redis.js'
import * as shardedScripts from '../src/stores/presence-scripts-sharded.js'
import { durableKeys } from '../src/stores/presence-sharded.js'
import { createNodeClient, createRedisCluster, LuaScript } from '../src/stores/redis.js'
import { ShardedSubscriber } from '../src/stores/sharded-subscriber.js'
import { startRedisCluster, type RedisCluster } from './helpers/redis-ha.js'

const silent = { info: () => {}, warn: () => {}, error: () => {} }
const HEARTBEAT_MS = 100
const TTL_MS = 600

/** Every script call of this file (all sharded), to check each touches one slot. */
interface ScriptCall { sha: string, keys: string[], args: Array<string | number | Buffer> }
const calls: ScriptCall[] = []
/** Runs before a script call: a test delays or fails some (the cluster itself is real). */
let beforeScript: (script: LuaScript, client: unknown) => Promise<void> = async () => {}
const { run, runBuffer } = LuaScript.prototype
LuaScript.prototype.run = async function (this: LuaScript, client, keys, args) {
  calls.push({ sha: this.sha, keys, args })
  await beforeScript(this, client)
  return await run.call(this, client, keys, args)
}
LuaScript.prototype.runBuffer = async function (this: LuaScript, client, keys, args) {
  calls.push({ sha: this.sha, keys, args })
  return await runBuffer.call(this, client, keys, args)
}

let sharedCluster: Promise<RedisCluster> | undefined
async function cluster (): Promise<RedisCluster> {
  // One cluster for the file (torn down with it), a fresh prefix per test.
  sharedCluster ??= startRedisCluster(t)
  return await sharedCluster
}

interface Node {
  presence: RedisPresence
  bus: RedisBus
  client: Cluster
  metrics: ReturnType<typeof createMetrics>
}

/** A relay node's stores on the cluster as plugins/stores.ts would build them: a sharded bus, presence on its publisher. */
async function node (t: Test, prefix: string, maxSocketsPerUser = 10): Promise<Node> {
  const redis = await cluster()
  const connection = { retryMaxMs: 100, commandTimeoutMs: 1000 }
  const target = { mode: 'cluster' as const, nodes: redis.nodes }
  const client = createRedisCluster(target, { ...connection, role: 'publish' })
  const subscriber = new ShardedSubscriber(client, (address) => createNodeClient(address, target, { ...connection, role: 'subscribe' }), silent, 1000)
  client.on('error', () => {})
  subscriber.on('error', () => {})
  const bus = new RedisBus({ publisher: client, subscriber, prefix, sharded: true, settleMs: 0, pingIntervalMs: 200, log: silent, retention: { size: 100, ttlSeconds: 600, positionTtlSeconds: 3600 } })
  const metrics = createMetrics()
  const presence = new RedisPresence({
    client,
    sharded: true,
    bus,
    prefix,
    nodeId: randomUUID(),
    heartbeatMs: HEARTBEAT_MS,
    ttlMs: TTL_MS,
    maxSocketsPerUser,
    packets: (event, socket) => presencePackets(event, socket).map(({ topic, packet, durable }) =>
      durable === undefined ? { topic, packet } : { topic, packet: bus.durableArgument(topic, durable) }),
    metrics,
    log: silent
  })
  t.teardown(async () => {
    await presence.close()
    await bus.close()
    subscriber.disconnect()
    client.disconnect()
  })
  await until(() => bus.canAnnounce(), 10_000, 'the cluster bus got ready')
  return { presence, bus, client, metrics }
}

async function until (check: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms
  while (!await check()) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** The presence events `bus` receives on a chat's topic, as `c`/`d` per user id. */
async function observe (bus: RedisBus, chat: string): Promise<(userId: number) => string> {
  const seen: Array<{ type: string, id: number }> = []
  bus.onPacket((_topic, packet) => {
    const frame = JSON.parse(decodePacket(packet).frame.toString()) as { type: string, data: { user: { id: number } } }
    if (frame.type === 'user_connected' || frame.type === 'user_disconnected') seen.push({ type: frame.type, id: frame.data.user.id })
  })
  await bus.subscribe(`chat:${chat}`)
  return (userId) => seen.filter(({ id }) => id === userId).map(({ type }) => type === 'user_connected' ? 'c' : 'd').join('')
}

/** customer_presence of a console stream, oldest first: `offset:online` (1 or 0) per user. */
async function consoleStream (bus: RedisBus, topic: string, userId: number): Promise<string[]> {
  const read = await bus.read(topic, { after: 0, limit: 1000 })
  return read.packets.flatMap((packet, index) => {
    const frame = JSON.parse(decodePacket(packet).frame.toString()) as { type: string, offset: number, data: { user: { id: number }, online: boolean } }
    if (frame.type !== 'customer_presence' || frame.data.user.id !== userId) return []
    if (frame.offset !== read.offsets[index]) throw new Error('the frame carries its own offset')
    return [`${frame.offset}:${frame.data.online ? 1 : 0}`]
  })
}

const online = (entries: string[]): string => entries.map((entry) => entry.split(':')[1]).join('')

function customer (chat: string, id: number, widget?: string): ChatSocket {
  return {
    chatUuid: chat,
    userKey: `user:${id}`,
    connectionId: randomUUID(),
    user: { id, role: 'user', firstname: `customer ${id}` },
    customerScope: widget === undefined ? { uuid: chat } : { uuid: chat, widget }
  }
}

function operator (chat: string, id: number): ChatSocket {
  return { chatUuid: chat, userKey: `operator:${id}`, connectionId: randomUUID(), user: { id, role: 'operator' } }
}

function session (operatorId: number): ConsoleSession {
  return { connectionId: randomUUID(), operatorId: String(operatorId), user: { id: operatorId, role: 'operator' }, widgets: ['w1'], departments: [], connectedAt: Date.now() }
}

t.test('join and leave over two nodes: the chat hears each user come and go once, in order; the consoles get customer_presence with offsets', async (t) => {
  const prefix = (await cluster()).prefix()
  const [a, b] = [await node(t, prefix), await node(t, prefix)]
  const chat = randomUUID()
  const seen = await observe(b.bus, chat)
  const first = customer(chat, 501, 'w1')
  const second = { ...first, connectionId: randomUUID() }
  const agent = operator(chat, 7)
  t.ok(await a.presence.joinChat(first), 'the customer on node a')
  t.ok(await b.presence.joinChat(second), 'its second socket on node b')
  t.ok(await b.presence.joinChat(agent), 'an operator on node b')
  await a.presence.leaveChat(first.connectionId)
  t.same((await a.presence.customersOnline([chat]))[0]?.users, [first.user], 'still online through node b')
  await b.presence.leaveChat(second.connectionId)
  await b.presence.leaveChat(agent.connectionId)
  await until(() => seen(501).length >= 2 && seen(7).length >= 2, 3000, 'four announcements')
  t.equal(seen(501), 'cd', 'the customer: connected once, disconnected once (second socket and first leave unannounced)')
  t.equal(seen(7), 'cd', 'the operator too')
  for (const topic of ['widget:w1', 'any-widget']) {
    t.same(await consoleStream(a.bus, topic, 501), ['1:1', '2:0'], `${topic}: online at offset 1, offline at 2`)
  }
  t.same(await consoleStream(a.bus, 'consoles', 501), [], 'a chat with a widget goes out on its widget\'s lanes only')
  t.same(await consoleStream(a.bus, 'widget:w1', 7), [], 'operators cause no customer_presence')
  t.same((await b.presence.customersOnline([chat]))[0]?.users, [], 'nobody left online')
})

t.test('the cap holds over both nodes, and a refused socket leaves nothing behind', async (t) => {
  const redis = await cluster()
  const prefix = redis.prefix()
  const [a, b] = [await node(t, prefix, 3), await node(t, prefix, 3)]
  const keys = new PresenceKeys(prefix, true)
  const chat = randomUUID()
  const sockets = [1, 2, 3, 4, 5].map(() => customer(chat, 601))
  const [s1, s2, s3, s4, s5] = sockets as [ChatSocket, ChatSocket, ChatSocket, ChatSocket, ChatSocket]
  t.same([await a.presence.joinChat(s1), await b.presence.joinChat(s2), await a.presence.joinChat(s3)], [true, true, true], 'three admitted')
  t.same([await b.presence.joinChat(s4), await a.presence.joinChat(s5)], [false, false], 'the fourth is refused on either node')
  t.equal(await a.client.scard(keys.room(chat, 'user:601')), 3, 'three sockets in the room')
  const held = (await a.client.hlen(keys.sockets(a.presence.nodeId))) + (await b.client.hlen(keys.sockets(b.presence.nodeId)))
  t.equal(held, 3, 'the nodes\' hashes hold the admitted only')
  await a.presence.leaveChat(s1.connectionId)
  t.ok(await b.presence.joinChat(s4), 'a freed place is taken again, on the other node')

  const consoles = [1, 2, 3, 4].map(() => session(61))
  t.same([await a.presence.addSession(consoles[0] as ConsoleSession), await b.presence.addSession(consoles[1] as ConsoleSession), await a.presence.addSession(consoles[2] as ConsoleSession)], [true, true, true])
  t.equal(await b.presence.addSession(consoles[3] as ConsoleSession), false, 'a fourth console is refused')
  t.equal((await b.presence.onlineUsers()).find((entry) => entry.user.id === 61)?.sessions, 3, '/online-users counts three')
})

t.test('/online-users and /customers/online agree from both nodes over chats of many slots', async (t) => {
  const prefix = (await cluster()).prefix()
  const [a, b] = [await node(t, prefix), await node(t, prefix)]
  const chats = Array.from({ length: 12 }, () => randomUUID())
  t.ok(new Set(chats.map((chat) => slotOf(`{chat:${chat}}`))).size > 6, 'the chats spread over slots')
  const expected = chats.map((chat, index) => ({ chat: { uuid: chat }, users: index % 3 === 0 ? [] : [{ id: 700 + index, role: 'user', firstname: `customer ${700 + index}` }] }))
  for (const [index, chat] of chats.entries()) {
    if (index % 3 === 0) continue
    await (index % 2 === 0 ? a : b).presence.joinChat(customer(chat, 700 + index))
    await a.presence.joinChat(operator(chat, 9))
  }
  await a.presence.addSession(session(81))
  await b.presence.addSession(session(81))
  await b.presence.addSession(session(82))
  t.same(await a.presence.customersOnline(chats), expected, 'node a: the customers of each chat, in order, no operators')
  t.same(await b.presence.customersOnline(chats), expected, 'node b: the same')
  const summary = (users: Awaited<ReturnType<RedisPresence['onlineUsers']>>): string[] =>
    users.map((entry) => `${String(entry.user.id)}×${entry.sessions}`).sort()
  t.same(summary(await a.presence.onlineUsers()), ['81×2', '82×1'], 'node a: every console over both nodes')
  t.same(summary(await b.presence.onlineUsers()), ['81×2', '82×1'], 'node b: the same')
})

t.test('a dead node is swept once by the survivors: each departure announced once, to the chat and to the consoles', async (t) => {
  const prefix = (await cluster()).prefix()
  const [dying, b, c] = [await node(t, prefix), await node(t, prefix), await node(t, prefix)]
  const keys = new PresenceKeys(prefix, true)
  const chat = randomUUID()
  const watcher = await node(t, prefix)
  const seen = await observe(watcher.bus, chat)
  const gone = customer(chat, 901)
  const stays = customer(chat, 902)
  await dying.presence.joinChat(gone)
  await dying.presence.joinChat({ ...gone, connectionId: randomUUID() })
  await dying.presence.joinChat(stays)
  await b.presence.joinChat({ ...stays, connectionId: randomUUID() })
  await dying.presence.joinChat(operator(chat, 903))
  await dying.presence.addSession(session(91))
  await b.presence.addSession(session(92))
  await until(() => seen(901) === 'c' && seen(902) === 'c' && seen(903) === 'c', 3000, 'everyone announced')

  // Its connection gone, its heartbeat stops; two survivors race to sweep it once its key expires.
  dying.client.disconnect()
  await until(async () => await b.client.sismember(keys.nodes, dying.presence.nodeId) === 0, 5000, 'the dead node left the nodes set')
  await until(() => seen(901).length >= 2 && seen(903).length >= 2, 3000, 'departures announced')
  await new Promise((resolve) => setTimeout(resolve, 5 * HEARTBEAT_MS))
  t.equal(seen(901), 'cd', 'the customer whose sockets were all there: gone, once')
  t.equal(seen(903), 'cd', 'the operator: gone, once')
  t.equal(seen(902), 'c', 'a customer still on a survivor: not announced')
  t.same(online(await consoleStream(b.bus, 'consoles', 901)), '10', 'consoles: online, then offline once')
  t.same(online(await consoleStream(b.bus, 'consoles', 902)), '1', 'consoles: the one still there stays online')
  t.same((await c.presence.customersOnline([chat]))[0]?.users, [stays.user], '/customers/online: only the one still there')
  t.same((await c.presence.onlineUsers()).map((entry) => entry.user.id), [92], '/online-users: the dead node\'s console is gone')
  t.equal(await b.client.exists(keys.sockets(dying.presence.nodeId)), 0, 'its sockets hash is gone')
  t.equal(await b.client.exists(keys.swept(dying.presence.nodeId)), 1, 'and it is marked swept')
  t.equal(await b.client.exists(keys.lease(dying.presence.nodeId)), 0, 'the lease released')
  const departures = async (n: Node): Promise<number> => (await n.metrics.eventsAccepted.get()).values.find((value) => value.labels.source === 'presence')?.value ?? 0
  const counted = await departures(b) + await departures(c) + await departures(watcher)
  t.equal(counted, 2, 'the survivors (the watcher is one) counted the two departures, once')

  // It was only stalled: back, it learns it was swept and writes its sockets back, announcing them again.
  await dying.client.connect()
  await until(() => seen(901).length >= 3 && seen(903).length >= 3, 5000, 'the woken node announced its users again')
  await new Promise((resolve) => setTimeout(resolve, 5 * HEARTBEAT_MS))
  t.same([seen(901), seen(903), seen(902)], ['cdc', 'cdc', 'c'], 'each once again; the one that never left, never')
  t.same(online(await consoleStream(b.bus, 'consoles', 901)), '101', 'consoles: online again')
  t.same((await c.presence.customersOnline([chat]))[0]?.users.map((user) => user.id).sort(), [901, 902], '/customers/online: both')
  t.same((await c.presence.onlineUsers()).map((entry) => entry.user.id).sort(), [91, 92], '/online-users: its console is back')
})

t.test('a sweeper that died holding the lease is replaced once it expires, and the departure is announced once', async (t) => {
  const prefix = (await cluster()).prefix()
  const [dying, b] = [await node(t, prefix), await node(t, prefix)]
  const keys = new PresenceKeys(prefix, true)
  const chat = randomUUID()
  const seen = await observe(b.bus, chat)
  await dying.presence.joinChat(customer(chat, 920))
  await until(() => seen(920) === 'c', 3000, 'announced')
  dying.client.disconnect()
  // A survivor that took the lease and died: nobody else sweeps until it expires.
  await b.client.set(keys.lease(dying.presence.nodeId), 'a-dead-sweeper', 'PX', 1500)
  await new Promise((resolve) => setTimeout(resolve, 1000))
  t.equal(seen(920), 'c', 'not swept while the lease is held')
  await until(() => seen(920) === 'cd', 3000, 'swept once the lease expired')
  await new Promise((resolve) => setTimeout(resolve, 5 * HEARTBEAT_MS))
  t.equal(seen(920), 'cd', 'announced once')
  t.same(online(await consoleStream(b.bus, 'consoles', 920)), '10', 'consoles: offline once')
})

t.test('a user reloading between two nodes 30 times: the chat sees c(dc)*, the consoles strictly alternate, ending online', async (t) => {
  const prefix = (await cluster()).prefix()
  const [a, b] = [await node(t, prefix), await node(t, prefix)]
  const watcher = await node(t, prefix)
  const chat = randomUUID()
  const seen = await observe(watcher.bus, chat)
  // Console appends come late, in any order: the guard must keep the streams alternating.
  const append = shardedScripts.APPEND_CUSTOMER_PRESENCE
  beforeScript = async (script) => {
    if (script === append) await new Promise((resolve) => setTimeout(resolve, Math.random() * 30))
  }
  t.teardown(() => { beforeScript = async () => {} })
  let current = customer(chat, 950, 'w2')
  let on = a
  await on.presence.joinChat(current)
  for (let round = 1; round <= 30; round++) {
    const next = { ...current, connectionId: randomUUID() }
    const other = on === a ? b : a
    // The reload: the old socket closes while the new one opens on the other node.
    await Promise.all([on.presence.leaveChat(current.connectionId), other.presence.joinChat(next)])
    current = next
    on = other
  }
  const keys = new PresenceKeys(prefix, true)
  t.equal(await a.client.scard(keys.room(chat, 'user:950')), 1, 'one socket left in presence')
  t.match(seen(950), /^c(dc)*$/, `the chat: alternating, ending connected ("${seen(950)}")`)
  for (const topic of ['widget:w2', 'any-widget']) {
    const stream = await consoleStream(a.bus, topic, 950)
    t.match(online(stream), /^1(01)*$/, `${topic}: strictly alternating, ending online ("${online(stream)}")`)
    t.same(stream.map((entry) => Number(entry.split(':')[0])), stream.map((_entry, index) => index + 1), `${topic}: offsets 1, 2, 3… with no gap`)
  }
  t.same((await b.presence.customersOnline([chat]))[0]?.users, [current.user], '/customers/online: online')
})

t.test('a console append Redis did not take is counted and retried until the stream has it, once', async (t) => {
  const prefix = (await cluster()).prefix()
  const a = await node(t, prefix)
  const chat = randomUUID()
  let failures = 2
  beforeScript = async (script) => {
    if (script === shardedScripts.APPEND_CUSTOMER_PRESENCE && failures-- > 0) throw new Error('injected: the console slot did not answer')
  }
  t.teardown(() => { beforeScript = async () => {} })
  const socket = customer(chat, 960)
  t.ok(await a.presence.joinChat(socket), 'admitted although the consoles did not hear of it yet')
  const failed = async (): Promise<number> => (await a.metrics.presenceFailures.get()).values.find((value) => value.labels.operation === 'customer_presence')?.value ?? 0
  t.equal(await failed(), 1, 'relay_presence_failures_total{operation="customer_presence"}')
  await until(async () => (await consoleStream(a.bus, 'consoles', 960)).length === 1, 3000, 'a heartbeat appended it')
  await a.presence.leaveChat(socket.connectionId)
  t.same(online(await consoleStream(a.bus, 'consoles', 960)), '10', 'online once, then offline')
  t.equal(await a.client.hlen(new PresenceKeys(prefix, true).sockets(a.presence.nodeId)), 0, 'the node\'s hash let the socket go once all was told')
})

t.test('every presence script on the cluster touches one slot: its keys, its channels and the streams it appends to', async (t) => {
  // The scenarios above ran every sharded script; this one adds a node that leaves (its own sweep).
  const prefix = (await cluster()).prefix()
  const a = await node(t, prefix)
  const chat = randomUUID()
  await a.presence.joinChat(customer(chat, 970, 'w3'))
  await a.presence.addSession(session(97))
  await a.presence.close()
  const scripts = Object.values(shardedScripts).filter((value): value is LuaScript => value instanceof LuaScript)
  const shas = new Set(scripts.map((script) => script.sha))
  const used = new Set(calls.map((call) => call.sha).filter((sha) => shas.has(sha)))
  t.equal(used.size, scripts.length, `every sharded presence script ran (${used.size} of ${scripts.length})`)
  let crossing = 0
  for (const call of calls) {
    // Key and channel names are strings under a test prefix; a durable argument names its stream's keys.
    const names = [...call.keys]
    for (const arg of call.args) {
      if (typeof arg === 'string' && arg.startsWith('test-')) names.push(arg)
      if (Buffer.isBuffer(arg) && arg[0] === 0) names.push(...durableKeys(arg))
    }
    const slots = new Set(names.map((name) => slotOf(name)))
    if (call.keys.length === 0 || slots.size !== 1) {
      crossing += 1
      t.fail(`a script on ${slots.size} slots: ${names.join(' ')}`)
    }
  }
  t.equal(crossing, 0, `${calls.length} script calls, each on one slot`)
})
