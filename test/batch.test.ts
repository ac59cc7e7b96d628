import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { closeAll, join, type Frame, type TestClient } from './helpers/client.js'
import { startCluster, waitForBus } from './helpers/cluster.js'
import { startRedis } from './helpers/redis.js'
import { API_TOKEN, customerToken, operatorToken, startRelay, type Relay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

/* Answers are read loosely: JSON from the wire, the assertions say what matters. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Loose = any

interface BatchEvent { route: string, body: unknown }

async function postBatch (relay: Relay, events: BatchEvent[], headers: Record<string, string> = {}): Promise<{ statusCode: number, json: Loose, headers: Record<string, unknown> }> {
  const answer = await relay.app.inject({ method: 'POST', url: '/batch', payload: { events }, headers: { 'api-token': API_TOKEN, ...headers } })
  return { statusCode: answer.statusCode, json: answer.json(), headers: answer.headers }
}

const message = (chat: string, fields: Record<string, unknown> = {}): BatchEvent =>
  ({ route: '/message', body: { message: messageOf(chatOf(chat, { widget: { source: 'lk' } }), fields) } })
const idOf = (event: BatchEvent): number => (event.body as Loose).message.id
const messageIds = (client: TestClient, ids: number[]): number[] =>
  client.ofType('message_added').map((frame) => frame.data.message.id as number).filter((id) => ids.includes(id))

/** Who sits in one chat: its customer and operator, and a console that sees it. */
async function room (t: Test, urls: string[]): Promise<{ chat: string, receivers: TestClient[] }> {
  const chat = randomUUID()
  const at = (index: number): string => urls[index % urls.length] as string
  const receivers = [
    await join(at(0), '/chat', { token: customerToken(1, chat), name: 'customer' }),
    await join(at(1), '/chat', { token: operatorToken(2, { chat }), name: 'operator in the chat' }),
    await join(at(2), '/broadcast', { token: operatorToken(3, { sources: { widgets: ['lk'] } }), name: 'console' })
  ]
  t.teardown(() => closeAll(...receivers))
  return { chat, receivers }
}

/** Posts a marker message to the chat and waits for it everywhere: what was published before it has arrived. */
async function barrier (relay: Relay, chat: string, receivers: TestClient[]): Promise<void> {
  const marker = message(chat, { text: `marker ${randomUUID()}` })
  t.equal((await relay.post('/message', marker.body)).statusCode, 200)
  await Promise.all(receivers.map(async (client) => await client.waitFor((frame) => frame.data?.message?.id === idOf(marker), 5000, 'the marker')))
}

async function orderPreserved (t: Test, ingest: Relay, socketUrls: string[]): Promise<void> {
  const { chat, receivers } = await room(t, socketUrls)
  const events = Array.from({ length: 100 }, (_, index) => message(chat, { message_index: index }))
  const ids = events.map(idOf)
  const answer = await postBatch(ingest, events)
  t.equal(answer.statusCode, 200)
  t.same(answer.json, { results: events.map(() => ({ ok: true })) }, 'every event published')
  for (const receiver of receivers) {
    await receiver.waitFor((frame) => frame.data?.message?.id === ids[99], 5000, 'the last message of the batch')
    t.same(messageIds(receiver, ids), ids, `${receiver.name} got the 100 messages in batch order`)
  }
}

t.test('one node: 100 messages of a batch reach the customer, the operator and a console in batch order', async (t) => {
  const relay = await startRelay(t)
  await orderPreserved(t, relay, [relay.wsUrl])
})

t.test('three nodes over Redis: 100 messages of a batch posted to one node arrive in batch order on the others', async (t) => {
  const redis = await startRedis(t)
  const [ingest, ...socketNodes] = await startCluster(t, redis, 3)
  if (ingest === undefined) throw new Error('no ingest node')
  await orderPreserved(t, ingest, socketNodes.map((node) => node.wsUrl))
})

t.test('every publishing route in one batch: a console gets each event, in batch order', async (t) => {
  const relay = await startRelay(t)
  const operatorId = 77
  const console1 = await join(relay.wsUrl, '/broadcast', { token: operatorToken(operatorId), name: 'console' })
  t.teardown(() => closeAll(console1))
  const chat = randomUUID()
  const events: BatchEvent[] = [
    { route: '/update/chat', body: chatOf(chat, { status: 'open' }) },
    message(chat),
    { route: '/global', body: { unread: 1 } },
    { route: '/notifications/chat', body: chatOf(chat, { operator_user: { id: operatorId, role: 'operator' } }) },
    { route: '/update/operators', body: [{ id: operatorId, role: 'operator', status: 'away' }] },
    { route: '/global', body: { unread: 2 } }
  ]
  const answer = await postBatch(relay, events)
  t.same(answer.json, { results: events.map(() => ({ ok: true })) })
  await console1.waitFor((frame) => frame.data?.unread === 2, 3000, 'the last event')
  const types = console1.frames.filter((frame) => frame.type !== 'connected').map((frame: Frame) => frame.type)
  t.same(types, ['chat_updated', 'message_added', 'global_updated', 'chat_notification', 'operator_updated', 'global_updated'])
})

t.test('invalid events get the answer their route would give, and every other event of the batch is published in order', async (t) => {
  const relay = await startRelay(t)
  const { chat, receivers } = await room(t, [relay.wsUrl])
  const invalid: Array<[BatchEvent, RegExp]> = [
    [{ route: '/message', body: { message: { id: 1, type: 'standard' } } }, /chat/],
    [{ route: '/message', body: { message: messageOf(chatOf(chat), { type: 'system', type_role: null }) } }, /type_role/],
    [{ route: '/message', body: { message: messageOf(chatOf(chat)), event: 'message_removed' } }, /event/],
    [{ route: '/update/operators', body: { id: 1 } }, /array/],
    [{ route: '/global', body: [1, 2] }, /object/],
    [{ route: '/notifications/chat', body: chatOf(chat) }, /operator_user/]
  ]
  const valid = Array.from({ length: invalid.length + 1 }, () => message(chat))
  const events = valid.flatMap((event, index) => index < invalid.length ? [event, (invalid[index] as [BatchEvent, RegExp])[0]] : [event])
  const answer = await postBatch(relay, events)
  t.equal(answer.statusCode, 200, 'a batch with invalid events is still answered 200')
  const results = answer.json.results as Loose[]
  t.equal(results.length, events.length, 'one result per event')
  for (const [index, event] of events.entries()) {
    const expected = invalid.find(([bad]) => bad === event)
    if (expected === undefined) {
      t.same(results[index], { ok: true }, `event ${index} is published`)
      continue
    }
    t.equal(results[index].status, 400, `event ${index} (${event.route}) is a 400`)
    t.match(results[index].error, expected[1], `event ${index}: the error names ${String(expected[1])}`)
    const alone = await relay.post(event.route, event.body)
    t.equal(alone.statusCode, 400)
    t.equal(results[index].error, JSON.parse(alone.body).message, `event ${index}: the same words as POST ${event.route}`)
  }
  const ids = valid.map(idOf)
  await barrier(relay, chat, receivers)
  for (const receiver of receivers) t.same(messageIds(receiver, ids), ids, `${receiver.name} got every valid message, in order`)
  const customer = receivers[0] as TestClient
  t.equal(customer.frames.filter((frame) => frame.data?.message?.id === 1).length, 0, 'nothing of an invalid event was published')
  t.equal(receivers[2]?.ofType('global_updated').length, 0, 'nor the invalid /global')
})

t.test('the bus failing mid-batch: the events before it are published, it and every later one answer 503', async (t) => {
  const relay = await startRelay(t)
  const { chat, receivers } = await room(t, [relay.wsUrl])
  const { publisher, stores } = relay.app
  const publish = publisher.publish.bind(publisher)
  let calls = 0
  publisher.publish = async (event, source) => {
    if (++calls === 4) await stores.bus.close()
    await publish(event, source)
  }
  const events = [message(chat), message(chat), { route: '/global', body: { a: 1 } }, message(chat), message(chat), { route: '/message', body: {} }]
  const answer = await postBatch(relay, events)
  t.equal(answer.statusCode, 200)
  const results = answer.json.results as Loose[]
  t.same(results.slice(0, 3), [{ ok: true }, { ok: true }, { ok: true }], 'the first three were published')
  t.match(results[3], { status: 503, error: /bus/ }, 'the fourth found the bus down')
  for (const later of results.slice(4)) t.match(later, { status: 503, error: /not published: event 3 / }, 'every later event, valid or not, is not published')
  t.equal(calls, 4, 'nothing was tried after the failure')
  const sent = [events[0], events[1], events[3], events[4]].map((event) => idOf(event as BatchEvent))
  for (const receiver of receivers) {
    await receiver.waitFor((frame) => frame.data?.message?.id === sent[1], 3000, 'the second message')
    t.same(messageIds(receiver, sent), sent.slice(0, 2), `${receiver.name} got exactly the published messages`)
  }
})

t.test('an unexpected failure mid-batch is a 500 for that event and stops the batch', async (t) => {
  const relay = await startRelay(t)
  const { publisher } = relay.app
  const publish = publisher.publish.bind(publisher)
  let calls = 0
  publisher.publish = async (event, source) => {
    if (++calls === 2) throw new Error('a bug')
    await publish(event, source)
  }
  const chat = randomUUID()
  const answer = await postBatch(relay, [message(chat), message(chat), message(chat)])
  t.same(answer.json.results, [{ ok: true }, { status: 500, error: 'internal error' }, { status: 503, error: 'not published: event 1 of the batch failed' }])
})

t.test('Redis killed mid-batch: the results say which events the cluster published, and those are exactly what arrived', async (t) => {
  const redis = await startRedis(t)
  const [ingest, socketNode] = await startCluster(t, redis, 2)
  if (ingest === undefined || socketNode === undefined) throw new Error('two nodes expected')
  const { chat, receivers } = await room(t, [socketNode.wsUrl])
  const events = Array.from({ length: 10 }, () => message(chat))
  const ids = events.map(idOf)
  const { publisher } = ingest.app
  const publish = publisher.publish.bind(publisher)
  let calls = 0
  publisher.publish = async (event, source) => {
    if (++calls === 5) {
      // What was published has arrived; then Redis dies before the fifth.
      await Promise.all(receivers.map(async (client) => await client.waitFor((frame) => frame.data?.message?.id === ids[3], 5000, 'the fourth')))
      await redis.kill()
      await waitForBus(ingest, 'down')
    }
    await publish(event, source)
  }
  const answer = await postBatch(ingest, events)
  t.equal(answer.statusCode, 200)
  const results = answer.json.results as Loose[]
  t.same(results.slice(0, 4), Array.from({ length: 4 }, () => ({ ok: true })), 'four published')
  t.equal(results.slice(4).filter((result) => result.status === 503).length, 6, 'the fifth and every later one: 503')
  publisher.publish = publish
  await redis.restart()
  await Promise.all([ingest, socketNode].map(async (node) => await waitForBus(node, 'ready', 10_000)))
  // Redis came back empty: the streams' epochs changed, so the node closes the sockets (1012) for their
  // clients to recover (recovered false: refetch). Nothing of the failed events arrived before that.
  const closes = await Promise.all(receivers.map(async (client) => await client.closed))
  t.same(closes.map((close) => close.code), receivers.map(() => 1012), 'every receiver is closed with 1012 once its node sees the new epoch')
  for (const receiver of receivers) t.same(messageIds(receiver, ids), ids.slice(0, 4), `${receiver.name} got exactly the four published`)
})

t.test('a body that is not a batch is a 400 and publishes nothing', async (t) => {
  const relay = await startRelay(t)
  const { chat, receivers } = await room(t, [relay.wsUrl])
  const valid = message(chat)
  const cases: Array<[string, unknown, RegExp]> = [
    ['no events', {}, /events/],
    ['events not a list', { events: valid }, /events/],
    ['no event', { events: [] }, /events/],
    ['101 events', { events: Array.from({ length: 101 }, () => valid) }, /events/],
    ['an event without route', { events: [valid, { body: valid.body }] }, /route/],
    ['a route that does not publish', { events: [valid, { route: '/online-users', body: {} }] }, /route/],
    ['a batch in a batch', { events: [valid, { route: '/batch', body: { events: [valid] } }] }, /route/]
  ]
  for (const [what, body, field] of cases) {
    const answer = await relay.post('/batch', body)
    t.equal(answer.statusCode, 400, what)
    t.match(JSON.parse(answer.body).message, field, `${what}: the message names ${String(field)}`)
  }
  const hundred = Array.from({ length: 100 }, () => message(chat))
  t.equal((await postBatch(relay, hundred)).statusCode, 200, '100 events are a batch')
  await barrier(relay, chat, receivers)
  for (const receiver of receivers) {
    t.equal(receiver.frames.filter((frame) => frame.data?.message?.id === idOf(valid)).length, 0, `${receiver.name} got nothing of the refused batches`)
    t.same(messageIds(receiver, hundred.map(idOf)), hundred.map(idOf), `${receiver.name} got the batch of 100`)
  }
})

t.test('POST /batch needs the Api-Token', async (t) => {
  const relay = await startRelay(t)
  const missing = await relay.app.inject({ method: 'POST', url: '/batch', payload: { events: [message('c1')] } })
  t.equal(missing.statusCode, 401)
  t.equal((await relay.post('/batch', { events: [message('c1')] }, 'wrong')).statusCode, 401)
})
