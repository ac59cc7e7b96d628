import { randomUUID } from 'node:crypto'
import t from 'tap'
import { closeAll, join } from './helpers/client.js'
import { API_TOKEN, customerToken, operatorToken, startRelay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'
import { BusUnavailableError } from '../src/stores/store-errors.js'

/** One Idempotency-Key covers a whole POST /batch (the route carries `config: { idempotent: true }`). */
t.test('a batch retried with the same Idempotency-Key is answered as the first and publishes nothing again', async (t) => {
  const relay = await startRelay(t)
  const chat = randomUUID()
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, chat), name: 'customer' })
  const console1 = await join(relay.wsUrl, '/broadcast', { token: operatorToken(2), name: 'console' })
  t.teardown(() => closeAll(customer, console1))
  const messages = Array.from({ length: 5 }, () => messageOf(chatOf(chat)))
  const events = [
    ...messages.map((message) => ({ route: '/message', body: { message } })),
    { route: '/global', body: { invalid: false } },
    { route: '/global', body: ['not', 'an', 'object'] }
  ]
  const post = async (key: string) => await relay.app.inject({
    method: 'POST', url: '/batch', payload: { events }, headers: { 'api-token': API_TOKEN, 'idempotency-key': key }
  })
  const first = await post('batch-1')
  t.equal(first.statusCode, 200)
  t.equal(first.json().results.filter((result: { ok?: true }) => result.ok === true).length, 6, 'six published, one invalid')
  t.equal(first.headers['idempotent-replayed'], undefined, 'the first is not a replay')
  const again = await post('batch-1')
  t.equal(again.statusCode, 200)
  t.equal(again.body, first.body, 'the retry gets the first answer, byte for byte')
  t.equal(again.headers['idempotent-replayed'], 'true')

  // Negative twin: another key is another batch, published again.
  const other = await post('batch-2')
  t.equal(other.headers['idempotent-replayed'], undefined)
  // A marker posted after everything: once it arrived, so did whatever any of the three requests published.
  const marker = messageOf(chatOf(chat))
  t.equal((await relay.post('/message', { message: marker })).statusCode, 200)
  for (const client of [customer, console1]) await client.waitFor((frame) => frame.data?.message?.id === marker.id, 5000, 'the marker')
  for (const message of messages) {
    t.equal(customer.ofType('message_added').filter((frame) => frame.data.message.id === message.id).length, 2,
      `message ${String(message.id)} went out once per key, not once per request`)
  }
  t.equal(console1.ofType('global_updated').length, 2, 'the console got the /global of each key once')
})

t.test('a batch that stopped at a 503 keeps no answer: resent with the same key it publishes only what was not, once', async (t) => {
  const relay = await startRelay(t)
  const chat = randomUUID()
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, chat), name: 'customer' })
  t.teardown(() => closeAll(customer))
  const messages = Array.from({ length: 6 }, () => messageOf(chatOf(chat)))
  const events = messages.map((message) => ({ route: '/message', body: { message } }))
  const post = async (): Promise<{ results: Array<{ ok?: true, status?: number }> }> => (await relay.app.inject({
    method: 'POST', url: '/batch', payload: { events }, headers: { 'api-token': API_TOKEN, 'idempotency-key': 'stopped-batch' }
  })).json()
  const { bus } = relay.app.stores
  const append = bus.append.bind(bus)
  let calls = 0
  bus.append = async (event) => {
    if (++calls === 4) throw new BusUnavailableError('the bus went away')
    return await append(event)
  }
  const first = await post()
  t.same(first.results.map((result) => result.ok === true ? 'ok' : result.status), ['ok', 'ok', 'ok', 503, 503, 503], 'stopped at the fourth')
  bus.append = append
  const again = await post()
  t.same(again.results.map((result) => result.ok === true ? 'ok' : result.status), ['ok', 'ok', 'ok', 'ok', 'ok', 'ok'], 'the retry is not a replay: all published')
  const marker = messageOf(chatOf(chat))
  t.equal((await relay.post('/message', { message: marker })).statusCode, 200)
  await customer.waitFor((frame) => frame.data?.message?.id === marker.id, 5000, 'the marker')
  t.same(customer.ofType('message_added').map((frame) => frame.data.message.id), [...messages.map((message) => message.id), marker.id],
    'every event exactly once, in batch order')
})
