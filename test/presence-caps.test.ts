import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { operatorKey, roomKey } from '../src/stores/presence-node.js'
import { closeAll, connect, join, type Frame, type TestClient } from './helpers/client.js'
import { eventually, startCluster } from './helpers/cluster.js'
import { parsePrometheus, valueOf } from './helpers/prometheus.js'
import { startRedis } from './helpers/redis.js'
import { API_TOKEN, customerToken, operatorToken, startRelay, type Relay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

/** The cap these tests run with (the default is 10). */
const CAP = 3
const CAP_ENV = { MAX_SOCKETS_PER_USER: String(CAP) }

const userEvent = (type: string, id: number) => (frame: Frame): boolean => frame.type === type && frame.data?.user?.id === id

async function refusedSockets (relay: Relay): Promise<number> {
  const answer = await relay.app.inject({ method: 'GET', url: '/metrics' })
  return valueOf(parsePrometheus(answer.body), 'relay_sockets_refused_total', { reason: 'user_cap' })
}

async function consoleSessions (relay: Relay, operatorId: number): Promise<number> {
  const answer = await relay.app.inject({ method: 'GET', url: '/online-users', headers: { 'api-token': API_TOKEN } })
  const online = answer.json() as Array<{ user: { id: number }, sessions: number }>
  return online.find((entry) => entry.user.id === operatorId)?.sessions ?? 0
}

/** A socket the cap refuses: closed 4429 without a single frame, `connected` included. */
async function expectRefused (t: Test, client: TestClient): Promise<void> {
  const { code } = await client.closed
  t.equal(code, 4429, `${client.name} is closed 4429`)
  t.same(client.frames, [], `${client.name} received nothing, not even connected`)
}

/** Posts a message to the chat and waits for it at `watcher`: whatever was published before has arrived. */
async function barrier (relay: Relay, chat: string, watcher: TestClient): Promise<void> {
  const marker = messageOf(chatOf(chat))
  const answer = await relay.post('/message', { message: marker })
  if (answer.statusCode !== 200) throw new Error(`barrier: POST /message answered ${answer.statusCode}`)
  await watcher.waitFor((frame) => frame.data?.message?.id === marker.id, 3000, 'the barrier message')
}

interface Nodes {
  relays: Relay[]
  /** Sockets in presence for a user key in a chat (Redis) or undefined (embedded bus: nothing to ask). */
  roomSize: (chat: string, userKey: string) => Promise<number | undefined>
}

async function twoNodes (t: Test): Promise<Nodes> {
  const redis = await startRedis(t)
  const relays = await startCluster(t, redis, 2, CAP_ENV)
  const probe = new Redis(redis.url)
  t.teardown(() => probe.disconnect())
  const prefix = relays[0]?.config.REDIS_PREFIX ?? ''
  return { relays, roomSize: async (chat, userKey) => await probe.scard(roomKey(prefix, chat, userKey)) }
}

async function oneNode (t: Test): Promise<Nodes> {
  return { relays: [await startRelay(t, CAP_ENV)], roomSize: async () => undefined }
}

const setups: Array<[string, (t: Test) => Promise<Nodes>]> = [['two nodes on Redis', twoNodes], ['the embedded bus', oneNode]]

for (const [name, setup] of setups) {
  t.test(`${name}: a customer holds at most ${CAP} sockets in a chat; the next closes 4429 unannounced, and a freed place is taken again`, async (t) => {
    const { relays, roomSize } = await setup(t)
    const node = (index: number): Relay => relays[index % relays.length] as Relay
    const chat = randomUUID()
    const customerId = 700
    const watchers = await Promise.all(relays.map(async (relay, index) =>
      await join(relay.wsUrl, '/chat', { token: operatorToken(701 + index, { chat }), name: `operator on node ${index}` })))
    const watcher = watchers[0] as TestClient
    const sockets: TestClient[] = []
    for (let index = 0; index < CAP; index++) {
      sockets.push(await join(node(index).wsUrl, '/chat', { token: customerToken(customerId, chat), name: `customer socket ${index} on node ${index % relays.length}` }))
    }
    t.teardown(() => closeAll(...watchers, ...sockets))
    await watcher.waitFor(userEvent('user_connected', customerId), 3000, 'user_connected of the customer')
    const refusedBefore = await refusedSockets(node(0))

    const overCap = relays.map((relay, index) => connect(relay.wsUrl, '/chat', { token: customerToken(customerId, chat), name: `socket ${CAP + 1} on node ${index}` }))
    for (const client of overCap) await expectRefused(t, client)
    const refusedByNode = await Promise.all(relays.map(refusedSockets))
    t.equal(refusedByNode.reduce((sum, value) => sum + value, 0) - refusedBefore, relays.length, 'each refusal is counted as user_cap')
    const elsewhere = await join(node(1).wsUrl, '/chat', { token: customerToken(customerId, randomUUID()), name: 'the same customer in another chat' })
    t.teardown(() => closeAll(elsewhere))
    t.pass('the cap is per chat: another chat admits the same customer')

    for (const observer of watchers) await barrier(node(0), chat, observer)
    for (const observer of watchers) {
      t.equal(observer.frames.filter(userEvent('user_connected', customerId)).length, 1, `${observer.name}: refused sockets are never announced`)
      t.equal(observer.frames.filter(userEvent('user_disconnected', customerId)).length, 0, `${observer.name}: a refused socket's close is no departure`)
    }
    t.equal(await roomSize(chat, `user:${customerId}`) ?? CAP, CAP, 'presence still counts the admitted sockets only')

    const indexed = (): number => relays.reduce((sum, relay) => sum + relay.app.sockets.hub.size, 0)
    const before = indexed()
    const freed = sockets.shift() as TestClient
    freed.close()
    // The node forgets the socket, then presence does (at once on the embedded bus, one round trip on Redis).
    await eventually(async () => indexed() === before - 1 && (await roomSize(chat, `user:${customerId}`) ?? CAP - 1) === CAP - 1, 3000, 'the closed socket left presence')
    sockets.push(await join(node(1).wsUrl, '/chat', { token: customerToken(customerId, chat), name: 'a socket in the freed place' }))
    t.pass('a freed place admits a new socket')
    const overAgain = connect(node(0).wsUrl, '/chat', { token: customerToken(customerId, chat), name: 'over the cap again' })
    await expectRefused(t, overAgain)

    for (const observer of watchers) await barrier(node(0), chat, observer)
    t.equal(watcher.frames.filter(userEvent('user_connected', customerId)).length, 1, 'the customer never stopped being connected')
    t.equal(watcher.frames.filter(userEvent('user_disconnected', customerId)).length, 0, 'and never left')
  })

  t.test(`${name}: an operator holds at most ${CAP} consoles; the next closes 4429 and /online-users keeps counting ${CAP}`, async (t) => {
    const { relays } = await setup(t)
    const node = (index: number): Relay => relays[index % relays.length] as Relay
    const operatorId = 710
    const consoles: TestClient[] = []
    for (let index = 0; index < CAP; index++) {
      consoles.push(await join(node(index).wsUrl, '/broadcast', { token: operatorToken(operatorId), name: `console ${index}` }))
    }
    t.teardown(() => closeAll(...consoles))
    await eventually(async () => await consoleSessions(node(0), operatorId) === CAP, 3000, `${CAP} consoles online`)

    const overCap = relays.map((relay, index) => connect(relay.wsUrl, '/broadcast', { token: operatorToken(operatorId, { sources: { widgets: ['lk'] } }), name: `console over the cap on node ${index}` }))
    for (const client of overCap) await expectRefused(t, client)
    t.equal(await consoleSessions(node(1), operatorId), CAP, 'refused consoles are not online')
    const colleague = await join(node(0).wsUrl, '/broadcast', { token: operatorToken(operatorId + 1) })
    t.teardown(() => closeAll(colleague))
    t.pass('the cap is per operator: a colleague is admitted')

    const freed = consoles.shift() as TestClient
    freed.close()
    await eventually(async () => await consoleSessions(node(0), operatorId) === CAP - 1, 3000, 'the closed console left /online-users')
    consoles.push(await join(node(1).wsUrl, '/broadcast', { token: operatorToken(operatorId), name: 'a console in the freed place' }))
    await eventually(async () => await consoleSessions(node(0), operatorId) === CAP, 3000, `${CAP} consoles online again`)
    await expectRefused(t, connect(node(0).wsUrl, '/broadcast', { token: operatorToken(operatorId), name: 'over the cap again' }))
  })
}

t.test('a console swept with its dead node frees its place in the cap', async (t) => {
  const redis = await startRedis(t)
  const [survivor, doomed] = await startCluster(t, redis, 2, CAP_ENV)
  if (survivor === undefined || doomed === undefined) throw new Error('no nodes')
  const probe = new Redis(redis.url)
  t.teardown(() => probe.disconnect())
  const operatorId = 720
  const consoles = [
    await join(survivor.wsUrl, '/broadcast', { token: operatorToken(operatorId) }),
    await join(doomed.wsUrl, '/broadcast', { token: operatorToken(operatorId) }),
    await join(doomed.wsUrl, '/broadcast', { token: operatorToken(operatorId) })
  ]
  t.teardown(() => closeAll(...consoles))
  const held = operatorKey(survivor.config.REDIS_PREFIX, String(operatorId))
  await eventually(async () => await probe.scard(held) === CAP, 3000, 'three consoles held')
  await doomed.app.close()
  await eventually(async () => await probe.scard(held) === 1, 3000, 'the closed node\'s consoles left the operator\'s set')
  consoles.push(await join(survivor.wsUrl, '/broadcast', { token: operatorToken(operatorId), name: 'a console after the node went' }))
  t.equal(await consoleSessions(survivor, operatorId), 2, 'two consoles online')
})
