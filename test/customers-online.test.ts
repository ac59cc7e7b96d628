import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import t from 'tap'
import { PresenceKeys, roomKey } from '../src/stores/presence-node.js'
import { closeAll, join, type TestClient } from './helpers/client.js'
import { eventually, startCluster, waitForBus } from './helpers/cluster.js'
import { startRedis } from './helpers/redis.js'
import { API_TOKEN, customerToken, operatorToken, startRelay, type Relay } from './helpers/relay.js'

/** POST /customers/online (SPEC HTTP ingest): the customers holding a socket in each chat, over all nodes. */
interface ChatCustomers { chat: { uuid: string }, users: Array<{ id: number, role?: string, firstname?: string }> }

async function customersOnline (relay: Relay, chats: string[]): Promise<ChatCustomers[]> {
  const answer = await relay.post('/customers/online', { chats })
  if (answer.statusCode !== 200) throw new Error(`/customers/online answered ${answer.statusCode}: ${answer.body}`)
  return JSON.parse(answer.body) as ChatCustomers[]
}

/** Each chat's customer ids, sorted: the comparable part of an answer. */
const idsOf = (answer: ChatCustomers[]): Array<[string, number[]]> =>
  answer.map((entry) => [entry.chat.uuid, entry.users.map((user) => user.id).sort((a, b) => a - b)])

t.test('/customers/online lists the customers of each chat asked, in order, and never operators or duplicates', async (t) => {
  const relay = await startRelay(t)
  const [chatA, chatB, empty] = [randomUUID(), randomUUID(), randomUUID()]
  const sockets = [
    await join(relay.wsUrl, '/chat', { token: customerToken(701, chatA) }),
    await join(relay.wsUrl, '/chat', { token: customerToken(701, chatA) }),
    await join(relay.wsUrl, '/chat', { token: customerToken(702, chatA) }),
    await join(relay.wsUrl, '/chat', { token: customerToken(703, chatB) }),
    await join(relay.wsUrl, '/chat', { token: operatorToken(704, { chat: chatA }) }),
    await join(relay.wsUrl, '/broadcast', { token: operatorToken(705) })
  ]
  t.teardown(() => closeAll(...sockets))
  const answer = await customersOnline(relay, [chatB, empty, chatA])
  t.same(idsOf(answer), [[chatB, [703]], [empty, []], [chatA, [701, 702]]], 'one entry per chat asked, in order; two sockets are one customer; operators are not customers')
  t.same(answer[0]?.users[0], { id: 703, role: 'user', firstname: 'Customer703' }, 'the profile its token carried')

  const [first, second] = sockets as [TestClient, TestClient]
  first.close()
  await first.closed
  t.same(idsOf(await customersOnline(relay, [chatA])), [[chatA, [701, 702]]], 'closing one of two sockets keeps the customer')
  second.close()
  await eventually(async () => idsOf(await customersOnline(relay, [chatA]))[0]?.[1].join() === '702', 3000, 'customer 701 gone with its last socket')
  t.pass('a customer leaves with its last socket')
})

t.test('/customers/online needs Api-Token and 1 to 1,000 chat uuids', async (t) => {
  const relay = await startRelay(t)
  const chat = randomUUID()
  t.equal((await relay.post('/customers/online', { chats: [chat] }, 'wrong-token')).statusCode, 401, 'a wrong token is refused')
  const unauthenticated = await relay.app.inject({ method: 'POST', url: '/customers/online', payload: { chats: [chat] } })
  t.equal(unauthenticated.statusCode, 401, 'no token is refused')
  const thousand = Array.from({ length: 1000 }, () => randomUUID())
  t.equal((await customersOnline(relay, thousand)).length, 1000, '1,000 chats are answered')
  for (const [body, why] of [
    [{ chats: [] }, 'no chat'],
    [{ chats: [...thousand, chat] }, '1,001 chats'],
    [{}, 'no chats field'],
    [{ chats: [7] }, 'a number'],
    [{ chats: [''] }, 'an empty uuid'],
    [{ chats: chat }, 'a string, not a list']
  ] as const) {
    const answer = await relay.post('/customers/online', body)
    t.equal(answer.statusCode, 400, `${why}: 400`)
    t.match(JSON.parse(answer.body).message, /chats/, `${why}: the message names the field`)
  }
  const text = await relay.app.inject({ method: 'POST', url: '/customers/online', payload: 'chats', headers: { 'api-token': API_TOKEN, 'content-type': 'text/plain' } })
  t.equal(text.statusCode, 415, 'not JSON: 415')
})

t.test('/customers/online answers 503 with Retry-After while presence is unavailable', async (t) => {
  const redis = await startRedis(t)
  const [relay] = await startCluster(t, redis, 1)
  if (relay === undefined) throw new Error('no node')
  const chat = randomUUID()
  t.same(await customersOnline(relay, [chat]), [{ chat: { uuid: chat }, users: [] }], 'answered while Redis is there')
  await redis.kill()
  await waitForBus(relay, 'down')
  const answer = await relay.post('/customers/online', { chats: [chat] })
  t.equal(answer.statusCode, 503, 'presence away: 503, never an empty answer')
  t.equal(answer.headers['retry-after'], '1')
})

interface OpenSocket { client: TestClient, role: 'user' | 'operator', id: number, chat: string }

t.test('/customers/online over three nodes stays right while customers come and go', async (t) => {
  const redis = await startRedis(t)
  const nodes = await startCluster(t, redis, 3)
  const prefix = (nodes[0] as Relay).config.REDIS_PREFIX
  const probe = new Redis(redis.url)
  t.teardown(() => probe.disconnect())
  const chats = Array.from({ length: 4 }, () => randomUUID())
  const observer = await join((nodes[0] as Relay).wsUrl, '/broadcast', { token: operatorToken(790), name: 'console without sources' })
  const open: OpenSocket[] = []
  t.teardown(() => closeAll(observer, ...open.map((socket) => socket.client)))
  /** Per chat and customer, the online/offline transitions the console must see, in order. */
  const transitions = new Map<string, boolean[]>()
  const socketsOf = (role: string, id: number, chat: string): number =>
    open.filter((socket) => socket.role === role && socket.id === id && socket.chat === chat).length
  const expected = (): Array<[string, number[]]> => chats.map((chat) => [chat,
    [...new Set(open.filter((socket) => socket.role === 'user' && socket.chat === chat).map((socket) => socket.id))].sort((a, b) => a - b)])
  const transition = (id: number, chat: string, online: boolean): void => {
    const key = `${chat}:${id}`
    transitions.set(key, [...(transitions.get(key) ?? []), online])
  }

  // mulberry32: the same run every time.
  let seed = 14
  const random = (below: number): number => {
    seed = (seed + 0x6d2b79f5) | 0
    let mixed = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    mixed = (mixed + Math.imul(mixed ^ (mixed >>> 7), 61 | mixed)) ^ mixed
    return (((mixed ^ (mixed >>> 14)) >>> 0) / 4294967296 * below) | 0
  }
  for (let step = 0; step < 60; step++) {
    const closing = open.length > 0 && random(5) < 2
    let what: string
    if (closing) {
      const [socket] = open.splice(random(open.length), 1) as [OpenSocket]
      socket.client.close()
      await socket.client.closed
      const left = socketsOf(socket.role, socket.id, socket.chat)
      // Settled once the room set (not the index under test) has let the socket go.
      await eventually(async () => await probe.scard(roomKey(prefix, socket.chat, `${socket.role}:${socket.id}`)) === left, 3000, `step ${step}: the close settled`)
      if (socket.role === 'user' && left === 0) transition(socket.id, socket.chat, false)
      what = `closed a socket of ${socket.role} ${socket.id}`
    } else {
      const role = random(4) === 0 ? 'operator' : 'user'
      const id = role === 'user' ? 710 + random(5) : 720 + random(2)
      const chat = chats[random(chats.length)] as string
      const node = nodes[random(nodes.length)] as Relay
      const token = role === 'user' ? customerToken(id, chat) : operatorToken(id, { chat })
      const client = await join(node.wsUrl, '/chat', { token, name: `${role} ${id}` })
      if (role === 'user' && socketsOf(role, id, chat) === 0) transition(id, chat, true)
      open.push({ client, role, id, chat })
      what = `opened a socket of ${role} ${id}`
    }
    for (const [index, node] of nodes.entries()) {
      t.same(idsOf(await customersOnline(node, chats)), expected(), `step ${step} (${what}): node ${index} answers the customers present`)
    }
  }

  closeAll(...open.map((socket) => socket.client))
  for (const socket of open.splice(0)) {
    await eventually(async () => await probe.scard(roomKey(prefix, socket.chat, `${socket.role}:${socket.id}`)) === 0, 3000, 'every socket closed')
    if (socket.role === 'user' && socketsOf('user', socket.id, socket.chat) === 0 && transitions.get(`${socket.chat}:${socket.id}`)?.at(-1) === true) {
      transition(socket.id, socket.chat, false)
    }
  }
  t.same(idsOf(await customersOnline(nodes[1] as Relay, chats)), chats.map((chat) => [chat, []]), 'nobody is left once every socket closed')
  const keys = new PresenceKeys(prefix)
  t.same(await probe.exists(...chats.map((chat) => keys.customers(chat))), 0, 'no customer index outlives its customers')

  // The console saw each customer's transitions, in order, once each (customer_presence and the index agree).
  const marker = randomUUID()
  t.equal((await (nodes[2] as Relay).post('/global', { marker })).statusCode, 200)
  await observer.waitFor((frame) => frame.data?.marker === marker, 5000, 'the barrier')
  const seen = new Map<string, boolean[]>()
  for (const frame of observer.ofType('customer_presence')) {
    const key = `${frame.data.chat.uuid as string}:${frame.data.user.id as number}`
    seen.set(key, [...(seen.get(key) ?? []), frame.data.online as boolean])
  }
  t.ok(transitions.size >= 5, `the run moved several customers (${transitions.size})`)
  t.same(Object.fromEntries(seen), Object.fromEntries(transitions), 'customer_presence told the console every first socket and every last one, in order')
})
