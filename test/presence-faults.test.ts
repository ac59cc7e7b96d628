import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { roomKey } from '../src/stores/presence-node.js'
import { closeAll, connect, join, type Frame, type TestClient } from './helpers/client.js'
import { eventually, FAST_REDIS_ENV, startCluster, waitForBus, startSurvivorAndChild } from './helpers/cluster.js'
import { startLatencyProxy } from './helpers/latency-proxy.js'
import { parsePrometheus, valueOf } from './helpers/prometheus.js'
import { startRedis, type PrivateRedis } from './helpers/redis.js'
import { API_TOKEN, customerToken, operatorToken, startRelay, token, type Relay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

/** Long enough for a reconnect, the bus settling and a heartbeat or two with FAST_REDIS_ENV. */
const BACK_MS = 10_000

const isPresence = (id: number) => (frame: Frame): boolean =>
  (frame.type === 'user_connected' || frame.type === 'user_disconnected') && frame.data?.user?.id === id

/** The presence events `observer` got about user `id`, in order: 'c' connected, 'd' disconnected. */
function presenceOf (observer: TestClient, id: number): string {
  return observer.frames.filter(isPresence(id)).map((frame) => frame.type === 'user_connected' ? 'c' : 'd').join('')
}

/** Resolves once `observer` has received `count` presence events about user `id`. */
async function presenceEvents (observer: TestClient, id: number, count: number, ms = BACK_MS): Promise<void> {
  await eventually(async () => observer.frames.filter(isPresence(id)).length >= count, ms,
    `${observer.name}: ${count} presence events of user ${id} (got "${presenceOf(observer, id)}")`)
}

async function presenceFailures (relay: Relay, operation: string): Promise<number> {
  const answer = await relay.app.inject({ method: 'GET', url: '/metrics' })
  return valueOf(parsePrometheus(answer.body), 'relay_presence_failures_total', { operation })
}

async function onlineOperators (relay: Relay): Promise<number[] | undefined> {
  const answer = await relay.app.inject({ method: 'GET', url: '/online-users', headers: { 'api-token': API_TOKEN } })
  if (answer.statusCode !== 200) return undefined
  return (answer.json() as Array<{ user: { id: number } }>).map((entry) => entry.user.id).sort()
}

/** A plain client for asserting on keys; it outlives Redis restarts quietly. */
function probeOf (t: Test, redis: PrivateRedis): Redis {
  const probe = new Redis(redis.url)
  probe.on('error', () => {})
  t.teardown(() => probe.disconnect())
  return probe
}

async function barrier (relay: Relay, chat: string, observers: TestClient[]): Promise<void> {
  const marker = messageOf(chatOf(chat))
  await eventually(async () => (await relay.post('/message', { message: marker })).statusCode === 200, BACK_MS, 'the barrier posted')
  await Promise.all(observers.map(async (observer) =>
    await observer.waitFor((frame) => frame.data?.message?.id === marker.id, 3000, 'the barrier message')))
}

interface Scene {
  redis: PrivateRedis
  probe: Redis
  /** Node A holds the watcher and a console of operator 811; node B the customer and a console of operator 812. */
  a: Relay
  b: Relay
  chat: string
  watcher: TestClient
  customer: TestClient
  consoleOnB: TestClient
}

const CUSTOMER = 810

async function scene (t: Test): Promise<Scene> {
  const redis = await startRedis(t)
  const [a, b] = await startCluster(t, redis, 2)
  if (a === undefined || b === undefined) throw new Error('no nodes')
  const probe = probeOf(t, redis)
  const chat = randomUUID()
  const watcher = await join(a.wsUrl, '/chat', { token: operatorToken(800, { chat }), name: 'operator in the chat on node A' })
  const consoleOnA = await join(a.wsUrl, '/broadcast', { token: operatorToken(811) })
  const customer = await join(b.wsUrl, '/chat', { token: customerToken(CUSTOMER, chat), name: 'customer on node B' })
  const consoleOnB = await join(b.wsUrl, '/broadcast', { token: operatorToken(812) })
  t.teardown(() => closeAll(watcher, consoleOnA, customer, consoleOnB))
  await presenceEvents(watcher, CUSTOMER, 1, 3000)
  await eventually(async () => (await onlineOperators(a))?.join() === '811,812', 3000, 'both consoles online')
  return { redis, probe, a, b, chat, watcher, customer, consoleOnB }
}

/** Closes node B's customer and console while Redis is away, and waits until B counted both writes failed. */
async function leaveWhileAway (t: Test, { b, customer, consoleOnB }: Scene): Promise<void> {
  const before = { leave: await presenceFailures(b, 'leave'), remove: await presenceFailures(b, 'remove_session') }
  customer.close()
  consoleOnB.close()
  await eventually(async () => await presenceFailures(b, 'leave') > before.leave && await presenceFailures(b, 'remove_session') > before.remove,
    5000, 'relay_presence_failures_total{operation="leave"} and {operation="remove_session"} moved')
  t.pass('the failed leave and console removal are counted')
}

/** After Redis is back: B's leaves went through, and the customer's next socket is its first again. */
async function leavesTaken (t: Test, { a, b, chat, watcher, probe }: Scene): Promise<void> {
  await eventually(async () => (await onlineOperators(a))?.join() === '811', BACK_MS, 'operator 812 leaves /online-users')
  t.pass('the closed console is gone from /online-users, the open one stays')
  await presenceEvents(watcher, CUSTOMER, 2)
  t.equal(presenceOf(watcher, CUSTOMER), 'cd', 'the customer is announced gone once Redis took the leave')
  t.equal(await probe.scard(roomKey(b.config.REDIS_PREFIX, chat, `user:${CUSTOMER}`)), 0, 'no socket of the customer left in presence')
  const again = await join(b.wsUrl, '/chat', { token: customerToken(CUSTOMER, chat), name: 'the customer back' })
  t.teardown(() => closeAll(again))
  await presenceEvents(watcher, CUSTOMER, 3)
  await barrier(a, chat, [watcher])
  t.equal(presenceOf(watcher, CUSTOMER), 'cdc', 'its next socket is announced user_connected')
}

t.test('a leave while Redis hangs (SIGSTOP) is retried until Redis takes it', async (t) => {
  const current = await scene(t)
  current.redis.pause()
  t.teardown(() => current.redis.resume())
  await leaveWhileAway(t, current)
  current.redis.resume()
  await leavesTaken(t, current)
})

t.test('a leave while Redis is down is retried once a restarted, empty Redis is back', async (t) => {
  const current = await scene(t)
  await current.redis.kill()
  await leaveWhileAway(t, current)
  await current.redis.restart()
  // The restarted Redis lost the streams: the watcher is closed 1012 to reconnect (SPEC Recovery); its
  // successor watches the rest.
  t.equal((await current.watcher.closed).code, 1012, 'the watcher reconnects: its stream has a new epoch')
  current.watcher = await join(current.a.wsUrl, '/chat', { token: operatorToken(800, { chat: current.chat }), name: 'operator in the chat again' })
  t.teardown(() => closeAll(current.watcher))
  const { a, b, chat, probe } = current
  // Node A's console was closed 1012 too (and reconnects in real life): only 812's absence is certain.
  await eventually(async () => (await onlineOperators(a))?.includes(812) === false, BACK_MS, 'operator 812 leaves /online-users')
  await eventually(async () => await probe.scard(roomKey(b.config.REDIS_PREFIX, chat, `user:${CUSTOMER}`)) === 0, BACK_MS, 'no socket of the customer left in presence')
  const again = await join(b.wsUrl, '/chat', { token: customerToken(CUSTOMER, chat), name: 'the customer back' })
  t.teardown(() => closeAll(again))
  await presenceEvents(current.watcher, CUSTOMER, 1)
  t.equal(presenceOf(current.watcher, CUSTOMER), 'c', 'its next socket is announced user_connected')
})

t.test('a socket opened while Redis is down is closed 1012 before connected, and leaves no ghost once Redis is back', async (t) => {
  const redis = await startRedis(t)
  const [a, b] = await startCluster(t, redis, 2)
  if (a === undefined || b === undefined) throw new Error('no nodes')
  const probe = probeOf(t, redis)
  const chat = randomUUID()
  await redis.kill()
  await waitForBus(b, 'down')
  const failedBefore = await presenceFailures(b, 'join')
  const early = connect(b.wsUrl, '/chat', { token: customerToken(821, chat), name: 'customer while Redis is down' })
  t.equal((await early.closed).code, 1012, 'closed with 1012: the relay cannot tell it where its stream stands')
  t.same(early.frames, [], 'before connected')
  t.equal(await presenceFailures(b, 'join') - failedBefore, 1, 'its join was counted as not taken')
  await redis.restart()
  await waitForBus(b, 'ready', BACK_MS)
  await eventually(async () => await probe.scard(roomKey(b.config.REDIS_PREFIX, chat, 'user:821')) === 0, BACK_MS, 'no ghost of the closed socket')
  const watcher = await join(a.wsUrl, '/chat', { token: operatorToken(820, { chat }), name: 'operator on node A' })
  const back = await join(b.wsUrl, '/chat', { token: customerToken(821, chat), name: 'customer back' })
  t.teardown(() => closeAll(watcher, back))
  await presenceEvents(watcher, 821, 1, 3000)
  t.equal(presenceOf(watcher, 821), 'c', 'its next socket is its first')
})

t.test('a pending join followed by its leave while Redis hangs leaves no ghost, and observers end up seeing the user gone', async (t) => {
  const redis = await startRedis(t)
  const [a, b] = await startCluster(t, redis, 2)
  if (a === undefined || b === undefined) throw new Error('no nodes')
  const probe = probeOf(t, redis)
  const chat = randomUUID()
  const watcher = await join(a.wsUrl, '/chat', { token: operatorToken(830, { chat }), name: 'operator on node A' })
  t.teardown(() => closeAll(watcher))
  redis.pause()
  t.teardown(() => redis.resume())
  const failedBefore = await presenceFailures(b, 'join')
  // With Redis hung the join waits out the command timeout; the stream position cannot be read either,
  // so the socket is closed 1012 before connected.
  const passing = connect(b.wsUrl, '/chat', { token: customerToken(831, chat), name: 'customer passing through' })
  t.equal((await passing.closed).code, 1012, 'closed with 1012 before connected')
  t.equal(await presenceFailures(b, 'join') - failedBefore, 1, 'the join is counted as not taken')
  redis.resume()
  await waitForBus(b, 'ready', BACK_MS)
  const sockets = `${b.config.REDIS_PREFIX}presence:node:`
  await eventually(async () => {
    const nodes = await probe.keys(`${sockets}*:sockets`)
    const held = await Promise.all(nodes.map(async (key) => await probe.hlen(key)))
    return await probe.scard(roomKey(b.config.REDIS_PREFIX, chat, 'user:831')) === 0 && held.reduce((sum, count) => sum + count, 0) === 1
  }, BACK_MS, 'presence holds only the watcher')
  await barrier(a, chat, [watcher])
  // The hung join may have run when Redis woke, announcing to nobody: a lone departure may follow.
  t.match(presenceOf(watcher, 831), /^d?(cd)*$/, `what the watcher saw never repeats and ends disconnected ("${presenceOf(watcher, 831)}")`)
})

t.test('a node stalled past the presence TTL is swept, and announces its users again when it wakes up', async (t) => {
  const { survivor, child: stalled, port } = await startSurvivorAndChild(t)
  t.teardown(() => { stalled.child.kill('SIGCONT') })

  const chat = randomUUID()
  const watcher = await join(survivor.wsUrl, '/chat', { token: operatorToken(840, { chat }), name: 'operator on the survivor' })
  // A profile past 125 bytes with multi-byte text: the sweep's packets travel as byte-counted items.
  const profile = { id: 841, role: 'user', firstname: 'Ёжик 🦔', lastname: 'Ü'.repeat(80), avatar: null }
  const customer = await join(`ws://127.0.0.1:${port}`, '/chat', {
    token: token({ sub: '841', role: 'user', chat, user: profile }), name: 'customer on the stalling node'
  })
  const console_ = await join(`ws://127.0.0.1:${port}`, '/broadcast', { token: operatorToken(842) })
  t.teardown(() => closeAll(watcher, customer, console_))
  await presenceEvents(watcher, 841, 1, 3000)
  await eventually(async () => (await onlineOperators(survivor))?.includes(842) === true, 3000, 'the console online')

  stalled.child.kill('SIGSTOP')
  await presenceEvents(watcher, 841, 2)
  t.equal(presenceOf(watcher, 841), 'cd', 'the survivor swept the silent node and announced its customer gone')
  t.same(watcher.frames.filter(isPresence(841))[1]?.data, { chat: { uuid: chat }, user: profile }, 'with the profile its token carried, byte for byte')
  t.notOk((await onlineOperators(survivor))?.includes(842), 'and its console left /online-users')

  stalled.child.kill('SIGCONT')
  await presenceEvents(watcher, 841, 3)
  t.equal(presenceOf(watcher, 841), 'cdc', 'the woken node announced its customer again')
  t.equal(customer.socket.readyState, customer.socket.OPEN, 'while the customer\'s socket stayed open all along')
  await eventually(async () => (await onlineOperators(survivor))?.includes(842) === true, BACK_MS, 'the console online again')
  t.pass('its console is back in /online-users')
  await barrier(survivor, chat, [watcher, customer])
  t.equal(presenceOf(watcher, 841), 'cdc', 'announced once')
})

t.test('a user reloading between a slow and a fast node 30 times: every observer sees connected and disconnected alternate, ending connected', async (t) => {
  const redis = await startRedis(t)
  // The slow node's Redis round trips take 40 ms: a join on the fast node lands between its leave and
  // whatever the slow node does after the leave answered.
  const proxy = await startLatencyProxy(t, redis.port, 20)
  const env = { REDIS_PREFIX: redis.prefix(), ...FAST_REDIS_ENV }
  const slow = await startRelay(t, { ...env, REDIS_URL: proxy.url })
  const fast = await startRelay(t, { ...env, REDIS_URL: redis.url })
  await Promise.all([waitForBus(slow, 'ready'), waitForBus(fast, 'ready')])
  const probe = probeOf(t, redis)
  const chat = randomUUID()
  const customerId = 850
  const observers = [
    await join(slow.wsUrl, '/chat', { token: operatorToken(851, { chat }), name: 'operator on the slow node' }),
    await join(fast.wsUrl, '/chat', { token: operatorToken(852, { chat }), name: 'operator on the fast node' })
  ]
  const opened: TestClient[] = []
  t.teardown(() => closeAll(...observers, ...opened))
  const customerSocket = { token: customerToken(customerId, chat) }
  const room = roomKey(fast.config.REDIS_PREFIX, chat, `user:${customerId}`)
  let current = await join(slow.wsUrl, '/chat', { ...customerSocket, name: 'customer, round 0' })
  let onSlow = true
  opened.push(current)
  for (let round = 1; round <= 30; round++) {
    const name = `customer, round ${round}`
    let next: TestClient
    if (onSlow) {
      // The reload: the old socket closes; the new one opens on the other node once the leave is at Redis.
      current.close()
      await proxy.forwarded()
      next = connect(fast.wsUrl, '/chat', { ...customerSocket, name })
    } else {
      next = connect(slow.wsUrl, '/chat', { ...customerSocket, name })
      current.close()
    }
    opened.push(next)
    await next.next('connected')
    await eventually(async () => await probe.scard(room) === 1, 3000, `round ${round}: one socket left in presence`, 5)
    current = next
    onSlow = !onSlow
  }
  await barrier(fast, chat, observers)
  for (const observer of observers) {
    const seen = presenceOf(observer, customerId)
    t.match(seen, /^c(dc)*$/, `${observer.name}: alternating, ending connected ("${seen}")`)
  }
})
