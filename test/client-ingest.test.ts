import { randomUUID } from 'node:crypto'
import t from 'tap'
import { createIngestClient, IngestError, type FetchLike, type IngestClientOptions } from '../client/src/ingest.js'
import type { Message } from '../src/protocol/protocol.js'
import { BusUnavailableError } from '../src/stores/store-errors.js'
import { closeAll, join, type TestClient } from './helpers/client.js'
import { API_TOKEN, customerToken, operatorToken, startRelay, type Relay, type Tap } from './helpers/relay.js'

let nextId = 50_000
function messageIn (chat: string, fields: Partial<Message> = {}): Message {
  const id = ++nextId
  return { id, type: 'standard', status: 'new', text: `text ${id}`, chat: { uuid: chat }, user: { id: 2, role: 'operator' }, ...fields }
}

interface Sent { url: string, method: string, key: string | undefined, body: string | undefined }

/** The real fetch, recording every try (its Idempotency-Key above all); `fail(n)` makes try n a network error. */
function recordingFetch (fail: (attempt: number) => boolean = () => false): { fetch: FetchLike, sent: Sent[] } {
  const sent: Sent[] = []
  const fetch: FetchLike = async (url, init) => {
    sent.push({ url, method: init.method, key: init.headers['idempotency-key'], body: init.body })
    if (fail(sent.length)) throw new TypeError('fetch failed')
    return await globalThis.fetch(url, init)
  }
  return { fetch, sent }
}

/** A client whose waits are recorded and skipped. */
function clientOf (relay: Relay, options: Partial<IngestClientOptions> = {}): { client: ReturnType<typeof createIngestClient>, waits: number[], sent: Sent[] } {
  const waits: number[] = []
  const recorded = recordingFetch()
  const client = createIngestClient({
    url: relay.httpUrl, apiToken: API_TOKEN, fetch: recorded.fetch, random: () => 0.5,
    sleep: async (ms) => { waits.push(ms) }, ...options
  })
  return { client, waits, sent: recorded.sent }
}

async function observers (t: Tap, relay: Relay, chat: string): Promise<{ customer: TestClient, console: TestClient }> {
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, chat), name: 'customer' })
  const console = await join(relay.wsUrl, '/broadcast', { token: operatorToken(2), name: 'console' })
  t.teardown(() => closeAll(customer, console))
  return { customer, console }
}

/** Posted last: once the customer has it, whatever was published before has arrived too. */
async function barrier (relay: Relay, customer: TestClient, chat: string): Promise<void> {
  const marker = messageIn(chat)
  const answer = await relay.post('/message', { message: marker })
  if (answer.statusCode !== 200) throw new Error(`marker refused: ${answer.body}`)
  await customer.waitFor((frame) => frame.data?.message?.id === marker.id, 5000, 'the marker')
}

const copiesOf = (client: TestClient, type: string, id: number): number =>
  client.ofType(type).filter((frame) => frame.data.message.id === id).length

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

t.test('every method publishes what its route says, each call with its own Idempotency-Key', async (t) => {
  const relay = await startRelay(t)
  const chat = randomUUID()
  const { customer, console } = await observers(t, relay, chat)
  const { client, sent } = clientOf(relay)

  const added = messageIn(chat)
  const result = await client.message({ message: added })
  t.match(result, { replayed: false, attempts: 1 })
  t.match(result.idempotencyKey, UUID, 'a random UUID key')
  t.same((await customer.next('message_added')).data.message, added, 'message: message_added reaches the customer')
  await client.message({ message: { ...added, text: 'edited' }, event: 'message_updated' })
  t.equal((await customer.next('message_updated')).data.message.text, 'edited', 'message_updated')
  await client.message({ message: added, event: 'message_deleted' })
  t.same((await customer.next('message_deleted')).data.message, { id: added.id, chat: { uuid: chat } }, 'message_deleted')
  const note = messageIn(chat, { type: 'note' })
  await client.message({ message: note })

  const chatBody = { uuid: chat, status: 'open', widget: { source: 'lk' } }
  await client.updateChat(chatBody)
  t.same((await console.next('chat_updated')).data.chat, chatBody, 'updateChat: chat_updated reaches the console')
  await client.updateOperators([{ id: 2, role: 'operator', status: 'away' }])
  t.same((await console.next('operator_updated')).data.operators, [{ id: 2, role: 'operator', status: 'away' }], 'updateOperators')
  await client.global({ banner: 'maintenance at 22:00' })
  t.same((await console.next('global_updated')).data, { banner: 'maintenance at 22:00' }, 'global: the object is the data')
  await client.notifyChat({ uuid: chat, operator_user: { id: 2, role: 'operator' } })
  t.equal((await console.next('chat_notification')).data.chat.uuid, chat, 'notifyChat reaches the assigned operator')
  await client.publish('/global', { via: 'publish' })
  await console.waitFor((frame) => frame.type === 'global_updated' && frame.data.via === 'publish', 3000, 'publish(route)')

  const first = messageIn(chat)
  const second = messageIn(chat)
  const batch = await client.batch([
    { route: '/message', body: { message: first } },
    { route: '/global', body: { batched: true } },
    { route: '/message', body: { message: second } }
  ])
  t.same(batch.results, [{ ok: true }, { ok: true }, { ok: true }], 'batch: one result per event')
  t.match(batch, { replayed: false, attempts: 1 })
  await barrier(relay, customer, chat)
  const ids = customer.ofType('message_added').map((frame) => frame.data.message.id)
  t.same(ids.slice(1, 3), [first.id, second.id], 'the batch published in order')
  t.notOk(ids.includes(note.id), 'negative twin: the note never reached the customer')
  t.ok(console.ofType('global_updated').some((frame) => frame.data.batched === true), 'the batch /global reached the console')

  const operators = await client.onlineUsers()
  t.same(operators.map((entry) => [entry.user.id, entry.sessions]), [['2', 1]], 'onlineUsers: the console\'s operator')
  const online = await client.customersOnline([chat, randomUUID()])
  t.same(online.map((entry) => entry.users.map((user) => user.id)), [[1], []], 'customersOnline: per chat asked, in order')

  const publishing = sent.filter((request) => !/online/.test(request.url))
  t.equal(publishing.length, 10)
  t.equal(new Set(publishing.map((request) => request.key)).size, 10, 'a new key per publishing call')
  t.ok(sent.filter((request) => /online/.test(request.url)).every((request) => request.key === undefined), 'reads carry no key')
})

t.test('a 503 is retried with the same Idempotency-Key after Retry-After: published once, the call resolves', async (t) => {
  const relay = await startRelay(t)
  const chat = randomUUID()
  const { customer } = await observers(t, relay, chat)
  const publish = relay.app.publisher.publish.bind(relay.app.publisher)
  let calls = 0
  relay.app.publisher.publish = async (...args) => {
    if (++calls === 1) throw new BusUnavailableError('the bus went away')
    return await publish(...args)
  }
  const { client, waits, sent } = clientOf(relay)
  const message = messageIn(chat)
  const result = await client.message({ message })
  t.match(result, { attempts: 2, replayed: false })
  t.same(waits, [1000], 'waited the relay\'s Retry-After: 1')
  t.same(sent.map((request) => request.key), [result.idempotencyKey, result.idempotencyKey], 'both tries carried the call\'s key')
  t.equal(sent[0]?.body, sent[1]?.body, 'and the same body')
  await barrier(relay, customer, chat)
  t.equal(copiesOf(customer, 'message_added', message.id), 1, 'published exactly once')
})

t.test('an append answered 503 that lands late is not published again by the retry (one key per call)', async (t) => {
  const relay = await startRelay(t, { PUBLISH_TIMEOUT_MS: '200' })
  const chat = randomUUID()
  const { customer } = await observers(t, relay, chat)
  /** The next append reaches the bus only after PUBLISH_TIMEOUT_MS: its request is answered 503, then it lands. */
  const slowNextAppend = (): Promise<void> => {
    const { bus } = relay.app.stores
    const append = bus.append.bind(bus)
    let landed!: () => void
    const done = new Promise<void>((resolve) => { landed = resolve })
    bus.append = async (event) => {
      bus.append = append
      await new Promise((resolve) => setTimeout(resolve, 500))
      try { return await append(event) } finally { landed() }
    }
    return done
  }
  const late = slowNextAppend()
  const { client, waits, sent } = clientOf(relay)
  const message = messageIn(chat)
  const result = await client.message({ message })
  t.equal(result.attempts, 2, 'the first try was a 503')
  t.same(waits, [1000])
  t.same(sent.map((request) => request.key), [result.idempotencyKey, result.idempotencyKey])
  await late
  await barrier(relay, customer, chat)
  t.equal(copiesOf(customer, 'message_added', message.id), 1, 'the late append and the retry published it once')

  // Negative twin: a retry under a new key (what a client that makes a key per try would send) publishes twice.
  const lateAgain = slowNextAppend()
  const twice = messageIn(chat)
  const post = async (key: string): Promise<Response> => await fetch(`${relay.httpUrl}/message`, {
    method: 'POST', body: JSON.stringify({ message: twice }), headers: { 'api-token': API_TOKEN, 'content-type': 'application/json', 'idempotency-key': key }
  })
  t.equal((await post(randomUUID())).status, 503)
  t.equal((await post(randomUUID())).status, 200)
  await lateAgain
  await barrier(relay, customer, chat)
  t.equal(copiesOf(customer, 'message_added', twice.id), 2, 'another key per try: published twice')
})

t.test('a batch that stopped at a 503 is resent whole with its key: every event published once, in order', async (t) => {
  const relay = await startRelay(t)
  const chat = randomUUID()
  const { customer } = await observers(t, relay, chat)
  const { bus } = relay.app.stores
  const append = bus.append.bind(bus)
  let calls = 0
  bus.append = async (event) => {
    if (++calls === 3) throw new BusUnavailableError('the bus went away')
    return await append(event)
  }
  const { client, waits, sent } = clientOf(relay)
  const messages = [messageIn(chat), messageIn(chat), messageIn(chat), messageIn(chat)]
  const outcome = await client.batch(messages.map((message) => ({ route: '/message' as const, body: { message } })))
  t.same(outcome.results, messages.map(() => ({ ok: true })), 'all published in the end')
  t.equal(outcome.attempts, 2)
  t.same(waits, [125], 'no Retry-After in a 200: the backoff (random 0.5 × 250 ms)')
  t.same(sent.map((request) => request.key), [outcome.idempotencyKey, outcome.idempotencyKey])
  await barrier(relay, customer, chat)
  const ids = customer.ofType('message_added').map((frame) => frame.data.message.id)
  t.same(ids.slice(0, 4), messages.map((message) => message.id), 'each once, in batch order')
  t.equal(ids.length, 5, 'and nothing twice (the marker is the fifth)')
})

t.test('4xx answers are not retried: the error carries the relay\'s status, code and message', async (t) => {
  const relay = await startRelay(t)
  const chat = randomUUID()
  const { client, waits, sent } = clientOf(relay)
  const invalid = await client.message({ message: { ...messageIn(chat), type: 'system' } }).catch((error: unknown) => error)
  t.ok(invalid instanceof IngestError, 'an IngestError')
  t.match(invalid, { status: 400, code: 'FST_ERR_VALIDATION', message: /type_role/, attempts: 1 }, '400 names the field')
  t.equal(sent.length, 1, 'tried once')
  t.same(waits, [])

  const denied = createIngestClient({ url: relay.httpUrl, apiToken: 'wrong', sleep: async () => { t.fail('no wait') } })
  await t.rejects(denied.global({ a: 1 }), { name: 'IngestError', status: 401, code: 'UNAUTHORIZED', message: 'invalid Api-Token' })

  const key = randomUUID()
  t.match(await client.global({ first: true }, { idempotencyKey: key }), { idempotencyKey: key, replayed: false })
  t.match(await client.global({ first: true }, { idempotencyKey: key }), { idempotencyKey: key, replayed: true }, 'the same key and body: replayed')
  await t.rejects(client.global({ first: false }, { idempotencyKey: key }), { status: 422, code: 'IDEMPOTENCY_KEY_REUSED' })
  t.same(waits, [], 'nothing was retried')
})

t.test('network errors are retried with the same key, bounded; the last error says what happened', async (t) => {
  const relay = await startRelay(t)
  const chat = randomUUID()
  const { customer } = await observers(t, relay, chat)
  const flaky = recordingFetch((attempt) => attempt <= 2)
  const waits: number[] = []
  const client = createIngestClient({ url: relay.httpUrl, apiToken: API_TOKEN, fetch: flaky.fetch, random: () => 1, sleep: async (ms) => { waits.push(ms) } })
  const message = messageIn(chat)
  const result = await client.message({ message })
  t.equal(result.attempts, 3)
  t.same(waits, [250, 500], 'full-jitter exponential backoff (random 1: the bound)')
  t.same(flaky.sent.map((request) => request.key), Array(3).fill(result.idempotencyKey))
  await barrier(relay, customer, chat)
  t.equal(copiesOf(customer, 'message_added', message.id), 1)

  const closed = await startRelay(t)
  await closed.app.close()
  const gone = createIngestClient({ url: closed.httpUrl, apiToken: API_TOKEN, retries: { attempts: 3 }, sleep: async () => {} })
  const error = await gone.updateChat({ uuid: chat }).catch((problem: unknown) => problem)
  t.match(error, { name: 'IngestError', status: undefined, code: 'NETWORK_ERROR', attempts: 3, message: /^relay unreachable: .*ECONNREFUSED/ })
})
