import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { closeAll, join, type Frame, type TestClient } from './helpers/client.js'
import { eventually, startCluster, waitForBus } from './helpers/cluster.js'
import { parsePrometheus } from './helpers/prometheus.js'
import { startRedis, type PrivateRedis } from './helpers/redis.js'
import { API_TOKEN, operatorToken, startRelay, testConfig, type Relay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'
import { storeContract } from './helpers/idempotency-contract.js'
import { MemoryIdempotency } from '../src/stores/idempotency-memory.js'
import { RedisIdempotency } from '../src/stores/idempotency-redis.js'
import { createRedisClient } from '../src/stores/redis.js'

interface Answer { statusCode: number, body: string, headers: Record<string, unknown> }

/** A POST with Api-Token and, when given, Idempotency-Key. */
async function post (relay: Relay, path: string, body: unknown, key?: string): Promise<Answer> {
  const headers: Record<string, string> = { 'api-token': API_TOKEN }
  if (key !== undefined) headers['idempotency-key'] = key
  const answer = await relay.app.inject({ method: 'POST', url: path, payload: body as object, headers })
  return { statusCode: answer.statusCode, body: answer.body, headers: answer.headers }
}

const replayed = (answer: Answer): boolean => answer.headers['idempotent-replayed'] === 'true'

/** Operator 3's console without sources: it receives every event of every publishing route. */
const NOTIFIED_OPERATOR = 3

/** One body per publishing route, each carrying `marker`, and how its frame is recognised on a console. */
function publication (path: string, marker: string): { body: unknown, type: string } {
  switch (path) {
    case '/message': return { body: { message: messageOf(chatOf(marker, { widget: { source: 'lk' } })) }, type: 'message_added' }
    case '/update/chat': return { body: chatOf(marker), type: 'chat_updated' }
    case '/update/operators': return { body: [{ id: 9, role: 'operator', marker }], type: 'operator_updated' }
    case '/global': return { body: { marker }, type: 'global_updated' }
    case '/notifications/chat': return { body: chatOf(marker, { operator_user: { id: NOTIFIED_OPERATOR, role: 'operator' } }), type: 'chat_notification' }
    default: throw new Error(`no body for ${path}`)
  }
}
const PUBLISHING_ROUTES = ['/message', '/update/chat', '/update/operators', '/global', '/notifications/chat']

const carries = (marker: string) => (frame: Frame): boolean => JSON.stringify(frame.data ?? null).includes(marker)
const count = (client: TestClient, marker: string): number => client.frames.filter(carries(marker)).length

/** Posts a marker without a key through `relay` and waits for it on every console: what was published before has arrived. */
async function barrier (relay: Relay, consoles: TestClient[]): Promise<void> {
  const marker = randomUUID()
  const answer = await post(relay, '/global', { marker })
  if (answer.statusCode !== 200) throw new Error(`barrier answered ${answer.statusCode}: ${answer.body}`)
  await Promise.all(consoles.map(async (client) => await client.waitFor(carries(marker), 5000, `barrier ${marker}`)))
}

async function console_ (t: Test, relay: Relay): Promise<TestClient> {
  const client = await join(relay.wsUrl, '/broadcast', { token: operatorToken(NOTIFIED_OPERATOR), name: `console on ${relay.httpUrl}` })
  t.teardown(() => closeAll(client))
  return client
}

/** One relay on the embedded bus, or one node on a private Redis. */
async function relayOn (t: Test, bus: 'memory' | 'redis', env: Record<string, string> = {}): Promise<Relay> {
  if (bus === 'memory') return await startRelay(t, env)
  const [relay] = await startCluster(t, await startRedis(t), 1, env)
  if (relay === undefined) throw new Error('no node')
  return relay
}

async function replaysMetric (relay: Relay, route: string): Promise<number> {
  const text = (await relay.app.inject({ method: 'GET', url: '/metrics' })).body
  const family = parsePrometheus(text).get('relay_idempotent_replays_total')
  return family?.samples.find((sample) => sample.labels.route === route)?.value ?? 0
}

for (const bus of ['memory', 'redis'] as const) {
  t.test(`${bus}: a repeated Idempotency-Key is answered as the first request was and publishes once, on every publishing route`, async (t) => {
    const relay = await relayOn(t, bus)
    const watcher = await console_(t, relay)
    for (const path of PUBLISHING_ROUTES) {
      const marker = randomUUID()
      const { body, type } = publication(path, marker)
      const key = `key-${marker}`
      const first = await post(relay, path, body, key)
      t.equal(first.statusCode, 200, `${path}: the first is published`)
      t.notOk(replayed(first), `${path}: the first is not a replay`)
      await watcher.waitFor((frame) => frame.type === type && carries(marker)(frame), 3000, `${type} ${marker}`)
      for (let repeat = 0; repeat < 3; repeat++) {
        const again = await post(relay, path, body, key)
        t.equal(again.statusCode, first.statusCode, `${path}: a repeat has the first's status`)
        t.equal(again.body, first.body, `${path}: a repeat has the first's body`)
        t.ok(replayed(again), `${path}: a repeat says Idempotent-Replayed: true`)
      }
      await barrier(relay, [watcher])
      t.equal(count(watcher, marker), 1, `${path}: published exactly once`)
      t.equal(await replaysMetric(relay, path), 3, `${path}: relay_idempotent_replays_total{route} counts the repeats`)
    }
  })

  t.test(`${bus}: a first request answered 503 (bus refused it) releases its key: the retry publishes, once`, async (t) => {
    const relay = await relayOn(t, bus)
    const watcher = await console_(t, relay)
    const { bus: theBus } = relay.app.stores
    const { isReady, canAppend } = theBus
    const marker = randomUUID()
    const key = `refused-${marker}`
    theBus.isReady = () => false
    theBus.canAppend = () => false
    const refused = await post(relay, '/global', { marker }, key)
    theBus.isReady = isReady
    theBus.canAppend = canAppend
    t.equal(refused.statusCode, 503, 'the bus refused the first: 503')
    t.equal(refused.headers['retry-after'], '1')
    const retry = await post(relay, '/global', { marker }, key)
    t.equal(retry.statusCode, 200, 'the retry with the same key is published')
    t.notOk(replayed(retry), 'the 503 was not stored: the retry ran')
    const repeat = await post(relay, '/global', { marker }, key)
    t.ok(replayed(repeat) && repeat.statusCode === 200, 'and the 200 is what is replayed now')
    await barrier(relay, [watcher])
    t.equal(count(watcher, marker), 1, 'published exactly once')
  })

  t.test(`${bus}: the same key with another body is 422 naming the header and publishes nothing`, async (t) => {
    const relay = await relayOn(t, bus)
    const watcher = await console_(t, relay)
    const marker = randomUUID()
    const other = randomUUID()
    const key = `reused-${marker}`
    t.equal((await post(relay, '/global', { marker, a: 1, b: { c: 2, d: 3 } }, key)).statusCode, 200)
    const reordered = await post(relay, '/global', { b: { d: 3, c: 2 }, a: 1, marker }, key)
    t.ok(reordered.statusCode === 200 && replayed(reordered), 'the same JSON with its keys in another order is the same body: replayed')
    const mismatch = await post(relay, '/global', { marker: other, a: 1, b: { c: 2, d: 3 } }, key)
    t.equal(mismatch.statusCode, 422, 'another body under the same key: 422')
    t.match(JSON.parse(mismatch.body), { statusCode: 422, code: 'IDEMPOTENCY_KEY_REUSED', message: /Idempotency-Key/ }, 'the message names the header')
    t.notOk(replayed(mismatch))
    await barrier(relay, [watcher])
    t.equal(count(watcher, marker), 1, 'the first body was published once')
    t.equal(count(watcher, other), 0, 'the other body was never published')
  })

  t.test(`${bus}: the key expires after IDEMPOTENCY_TTL_S, then the same request publishes again`, async (t) => {
    const relay = await relayOn(t, bus, { IDEMPOTENCY_TTL_S: '1' })
    const watcher = await console_(t, relay)
    const marker = randomUUID()
    const key = `expiring-${marker}`
    t.equal((await post(relay, '/global', { marker }, key)).statusCode, 200)
    const answeredAt = Date.now()
    t.ok(replayed(await post(relay, '/global', { marker }, key)), 'replayed within the TTL')
    await eventually(async () => !replayed(await post(relay, '/global', { marker }, key)), 5000, 'a repeat that is not replayed', 100)
    const after = Date.now() - answeredAt
    t.ok(after >= 900, `replayed for ${after} ms: the whole TTL (1 s)`)
    t.ok(after < 3000, `published again ${after} ms after the first answer`)
    await barrier(relay, [watcher])
    t.equal(count(watcher, marker), 2, 'published once per TTL window')
  })
}

t.test('the same key on two routes is two keys; no header changes nothing and touches no store', async (t) => {
  const relay = await startRelay(t)
  const watcher = await console_(t, relay)
  const store = relay.app.stores.idempotency
  const claim = store.claim.bind(store)
  let claims = 0
  store.claim = async (...args) => { claims++; return await claim(...args) }

  const marker = randomUUID()
  const key = `shared-${marker}`
  const global = await post(relay, '/global', { marker }, key)
  const operators = await post(relay, '/update/operators', [{ id: 9, role: 'operator', marker }], key)
  t.ok(global.statusCode === 200 && !replayed(global), '/global published')
  t.ok(operators.statusCode === 200 && !replayed(operators), '/update/operators published under the same key')
  t.equal(claims, 2)

  const plain = randomUUID()
  for (let repeat = 0; repeat < 3; repeat++) {
    const answer = await post(relay, '/global', { marker: plain })
    t.ok(answer.statusCode === 200 && answer.headers['idempotent-replayed'] === undefined, 'no header: published, never a replay')
  }
  t.equal(claims, 2, 'no header: no store round trip')
  await barrier(relay, [watcher])
  t.equal(watcher.frames.filter((frame) => frame.type === 'global_updated' && carries(marker)(frame)).length, 1)
  t.equal(watcher.frames.filter((frame) => frame.type === 'operator_updated' && carries(marker)(frame)).length, 1)
  t.equal(count(watcher, plain), 3, 'without a key every request publishes')
})

t.test('an invalid Idempotency-Key is 400 naming the header and publishes nothing', async (t) => {
  const relay = await startRelay(t)
  const watcher = await console_(t, relay)
  const marker = randomUUID()
  for (const [what, key] of [['empty', ''], ['201 characters', 'k'.repeat(201)], ['a tab', 'a\tb'], ['non-ASCII', 'clé'], ['DEL', 'a\x7Fb']]) {
    const answer = await post(relay, '/global', { marker }, key)
    t.equal(answer.statusCode, 400, `${what}: 400`)
    t.match(JSON.parse(answer.body).message, /idempotency-key/i, `${what}: the message names the header`)
  }
  await barrier(relay, [watcher])
  t.equal(count(watcher, marker), 0, 'nothing published')
  for (const [what, key] of [['1 character', 'k'], ['200 characters', 'k'.repeat(200)], ['printable ASCII', ' !~ key:/=+ ']]) {
    t.equal((await post(relay, '/global', { marker: `${marker}-${what}` }, key)).statusCode, 200, `${what}: accepted`)
  }
})

t.test('a final 4xx of the route is stored and replayed as well', async (t) => {
  const relay = await startRelay(t)
  const key = randomUUID()
  const body = { message: messageOf(chatOf(randomUUID()), { type: 'system', type_role: null }) }
  const first = await post(relay, '/message', body, key)
  t.equal(first.statusCode, 400, 'the handler refuses a system message without type_role')
  t.notOk(replayed(first))
  const again = await post(relay, '/message', body, key)
  t.ok(again.statusCode === 400 && again.body === first.body && replayed(again), 'the repeat gets the same 400, replayed')
})

/** Holds the publisher of `relay` until `open` is called (a first request still running). */
function holdPublisher (relay: Relay): { open: () => void, entered: Promise<void> } {
  const { publisher } = relay.app
  const publish = publisher.publish.bind(publisher)
  let open = (): void => {}
  let entered = (): void => {}
  const gate = new Promise<void>((resolve) => { open = resolve })
  const enteredPromise = new Promise<void>((resolve) => { entered = resolve })
  publisher.publish = async (...args) => {
    entered()
    await gate
    return await publish(...args)
  }
  return { open, entered: enteredPromise }
}

t.test('a repeat while the first is still running waits for its answer and answers the same', async (t) => {
  const relay = await startRelay(t)
  const watcher = await console_(t, relay)
  const held = holdPublisher(relay)
  const marker = randomUUID()
  const key = `waiting-${marker}`
  const store = relay.app.stores.idempotency
  const claim = store.claim.bind(store)
  let pendingSeen = 0
  let sawPendingTwice = (): void => {}
  const polled = new Promise<void>((resolve) => { sawPendingTwice = resolve })
  store.claim = async (...args) => {
    const outcome = await claim(...args)
    if (outcome.state === 'pending' && ++pendingSeen === 2) sawPendingTwice()
    return outcome
  }
  const first = post(relay, '/global', { marker }, key)
  await held.entered
  let repeatDone = false
  const repeat = post(relay, '/global', { marker }, key).finally(() => { repeatDone = true })
  await Promise.race([polled, repeat])
  t.equal(pendingSeen, 2, 'the repeat found the first running, and polled again')
  t.notOk(repeatDone, 'the repeat has not answered while the first runs')
  held.open()
  const [firstAnswer, repeatAnswer] = await Promise.all([first, repeat])
  t.equal(firstAnswer.statusCode, 200)
  t.ok(repeatAnswer.statusCode === 200 && repeatAnswer.body === firstAnswer.body && replayed(repeatAnswer), 'the repeat answers as the first did')
  await barrier(relay, [watcher])
  t.equal(count(watcher, marker), 1, 'published once')
})

t.test('a repeat whose first request runs past the wait is 409 IDEMPOTENCY_IN_PROGRESS with Retry-After', async (t) => {
  const relay = await startRelay(t, { PUBLISH_TIMEOUT_MS: '200' })
  const watcher = await console_(t, relay)
  const held = holdPublisher(relay)
  const marker = randomUUID()
  const key = `slow-${marker}`
  const first = post(relay, '/global', { marker }, key)
  await held.entered
  const started = Date.now()
  const conflict = await post(relay, '/global', { marker }, key)
  const waited = Date.now() - started
  t.equal(conflict.statusCode, 409)
  t.match(JSON.parse(conflict.body), { statusCode: 409, code: 'IDEMPOTENCY_IN_PROGRESS' })
  t.equal(conflict.headers['retry-after'], '1')
  t.ok(waited >= 200 && waited < 2000, `it waited ${waited} ms: a bound slightly above PUBLISH_TIMEOUT_MS (200)`)
  const otherBody = await post(relay, '/global', { marker: randomUUID() }, key)
  t.equal(otherBody.statusCode, 422, 'another body under a running key: 422 at once')
  held.open()
  t.equal((await first).statusCode, 200)
  const retry = await post(relay, '/global', { marker }, key)
  t.ok(retry.statusCode === 200 && replayed(retry), 'the retry after the first answered is replayed')
  await barrier(relay, [watcher])
  t.equal(count(watcher, marker), 1, 'published once')
})

t.test('the same key posted at once to two nodes: one publication, both answered 200 with the same body (50 keys)', async (t) => {
  const redis = await startRedis(t)
  const [nodeA, nodeB] = await startCluster(t, redis, 2)
  if (nodeA === undefined || nodeB === undefined) throw new Error('no nodes')
  const watchers = [await console_(t, nodeA), await console_(t, nodeB)]
  // Counts the claims that found the other node's request still running: the duplicates really overlapped.
  let overlapped = 0
  for (const node of [nodeA, nodeB]) {
    const store = node.app.stores.idempotency
    const claim = store.claim.bind(store)
    store.claim = async (...args) => {
      const outcome = await claim(...args)
      if (outcome.state === 'pending') overlapped++
      return outcome
    }
  }
  const markers: string[] = []
  let replays = 0
  for (let round = 0; round < 50; round++) {
    const marker = randomUUID()
    markers.push(marker)
    const key = `twice-${marker}`
    // Each node gets the same request; alternate which one is asked first.
    const [first, second] = round % 2 === 0 ? [nodeA, nodeB] : [nodeB, nodeA]
    const answers = await Promise.all([post(first, '/global', { marker }, key), post(second, '/global', { marker }, key)])
    t.same(answers.map((answer) => answer.statusCode), [200, 200], `round ${round}: both answered 200`)
    t.equal(answers[0]?.body, answers[1]?.body, `round ${round}: with the same body`)
    t.equal(answers.filter(replayed).length, 1, `round ${round}: one ran, the other was answered as it`)
    replays += answers.filter(replayed).length
  }
  await barrier(nodeA, watchers)
  for (const watcher of watchers) {
    const counts = markers.map((marker) => count(watcher, marker))
    t.same(counts.filter((seen) => seen !== 1), [], `${watcher.name}: every key published exactly once`)
  }
  t.equal(replays, 50)
  t.ok(overlapped > 0, `in ${overlapped} claims the other node's request was still running (the wait was exercised)`)
})

t.test('redis: a first request answered 503 while Redis hangs, retried once it answers: published exactly once', async (t) => {
  const redis = await startRedis(t)
  const [relay] = await startCluster(t, redis, 1, { PUBLISH_TIMEOUT_MS: '500' })
  if (relay === undefined) throw new Error('no node')
  const watcher = await console_(t, relay)
  const marker = randomUUID()
  const key = `hung-${marker}`
  redis.pause()
  t.teardown(() => redis.resume())
  const refused = await post(relay, '/global', { marker }, key)
  t.equal(refused.statusCode, 503, 'a hung Redis: 503')
  t.ok(refused.headers['retry-after'] !== undefined, 'with Retry-After')
  redis.resume()
  await waitForBus(relay, 'ready', 5000)
  // The backend retries what was not 200 (409 while a claim written late by the hung Redis lapses, 503 while settling).
  const seen: number[] = []
  await eventually(async () => {
    const answer = await post(relay, '/global', { marker }, key)
    seen.push(answer.statusCode)
    if (answer.statusCode !== 200 && answer.statusCode !== 409 && answer.statusCode !== 503) throw new Error(`unexpected ${answer.statusCode}: ${answer.body}`)
    return answer.statusCode === 200
  }, 10_000, 'a 200 for the retried key', 200)
  t.ok(replayed(await post(relay, '/global', { marker }, key)), 'then the key is answered')
  await barrier(relay, [watcher])
  t.equal(count(watcher, marker), 1, `published exactly once (answers: ${seen.join(', ')})`)
})

t.test('redis: an append answered 503 that reaches Redis late is not published again by the retry with the same key', async (t) => {
  const redis = await startRedis(t)
  const [relay] = await startCluster(t, redis, 1, { PUBLISH_TIMEOUT_MS: '500' })
  if (relay === undefined) throw new Error('no node')
  const watcher = await console_(t, relay)
  for (const [path, body] of [['/global', (marker: string) => ({ marker })], ['/batch', (marker: string) => ({ events: [{ route: '/global', body: { marker } }] })]] as const) {
    const marker = randomUUID()
    const key = `late-${marker}`
    // The key is claimed, then the append reaches Redis only after PUBLISH_TIMEOUT_MS (a slow network
    // or a busy Redis): the request is answered 503, and the append still runs, late.
    const { bus } = relay.app.stores
    const append = bus.append.bind(bus)
    bus.append = async (event) => {
      bus.append = append
      await new Promise((resolve) => setTimeout(resolve, 800))
      return await append(event)
    }
    const first = await post(relay, path, body(marker), key)
    const refused = path === '/batch' ? JSON.parse(first.body).results[0].status : first.statusCode
    t.equal(refused, 503, `${path}: the first attempt is a 503`)
    await watcher.waitFor(carries(marker), 5000, 'the late append')
    const seen: number[] = []
    await eventually(async () => {
      const answer = await post(relay, path, body(marker), key)
      seen.push(answer.statusCode)
      return answer.statusCode === 200 && (path !== '/batch' || JSON.parse(answer.body).results[0].ok === true)
    }, 10_000, 'a 200 for the retry', 200)
    await barrier(relay, [watcher])
    t.equal(count(watcher, marker), 1, `${path}: published exactly once (retry answers: ${seen.join(', ')})`)
  }
})

t.test('OpenAPI: Idempotency-Key is an optional header of every publishing route, with the 409 and 422 answers', async (t) => {
  const relay = await startRelay(t)
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const doc: any = (await relay.app.inject({ method: 'GET', url: '/openapi.json' })).json()
  for (const path of PUBLISHING_ROUTES) {
    const operation = doc.paths[path].post
    const header = operation.parameters?.find((parameter: { in: string, name: string }) => parameter.in === 'header' && parameter.name.toLowerCase() === 'idempotency-key')
    t.ok(header !== undefined, `${path} documents Idempotency-Key`)
    t.equal(header?.required ?? false, false, `${path}: the header is optional`)
    t.match(header?.schema, { type: 'string', minLength: 1, maxLength: 200 }, `${path}: 1-200 characters`)
    t.match(header?.description ?? header?.schema?.description, /IDEMPOTENCY_TTL_S/, `${path}: the header says what it does`)
    t.match(operation.responses['409']?.description, /Idempotency-Key/, `${path}: 409 described`)
    t.ok(operation.responses['409']?.headers?.['Retry-After'] !== undefined, `${path}: 409 carries Retry-After`)
    t.match(operation.responses['422']?.description, /Idempotency-Key/, `${path}: 422 described`)
  }
  const onlineUsers = doc.paths['/online-users'].get
  t.notOk((onlineUsers.parameters ?? []).some((parameter: { name: string }) => parameter.name.toLowerCase() === 'idempotency-key'), 'a route that publishes nothing has no such header')
})


t.test('store contract: memory', async (t) => {
  await storeContract(t, new MemoryIdempotency())
  const bounded = new MemoryIdempotency({ maxRecords: 3 })
  for (let index = 0; index < 10; index++) await bounded.claim({ route: '/global', key: `k${index}`, token: 't', bodyHash: 'h' }, 10_000)
  t.equal(bounded.size, 3, 'bounded: the oldest records go first')
})

t.test('store contract: redis (keys <prefix>idem:<route>:<key>)', async (t) => {
  const redis: PrivateRedis = await startRedis(t)
  const client = createRedisClient(redis.url, { role: 'test', retryMaxMs: 100, commandTimeoutMs: 1000 })
  t.teardown(() => client.disconnect())
  await new Promise<void>((resolve) => client.once('ready', () => resolve()))
  const prefix = redis.prefix()
  await storeContract(t, new RedisIdempotency({ client, prefix }))
  const store = new RedisIdempotency({ client, prefix })
  await store.claim({ route: '/global', key: 'a:b', token: 't', bodyHash: 'h' }, 10_000)
  t.ok(await client.exists(`${prefix}idem:/global:a:b`) === 1, 'the record is at <prefix>idem:<route>:<key>')
  const ttl = await client.pttl(`${prefix}idem:/global:a:b`)
  t.ok(ttl > 0 && ttl <= 10_000, 'a pending marker carries its lease as TTL')
})

t.test('IDEMPOTENCY_TTL_S: 300 by default, an integer of at least 1', async (t) => {
  t.equal(testConfig().IDEMPOTENCY_TTL_S, 300)
  t.equal(testConfig({ IDEMPOTENCY_TTL_S: '5' }).IDEMPOTENCY_TTL_S, 5)
  for (const bad of ['0', '-1', '1.5', 'soon']) t.throws(() => testConfig({ IDEMPOTENCY_TTL_S: bad }), /IDEMPOTENCY_TTL_S/, `${bad} is refused, naming the variable`)
})
