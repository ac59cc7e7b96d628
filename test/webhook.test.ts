import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { closeAll, join } from './helpers/client.js'
import { customerToken, operatorToken, startRelay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

interface Call { headers: IncomingMessage['headers'], body: { event: string, chat: { uuid: string }, user: { id: number }, data: Record<string, unknown> } }
type Answer = (call: Call, response: ServerResponse) => void

/** A real backend on a local port: records each call and answers as the test says. */
async function backend (t: Test, answer: Answer): Promise<{ url: string, calls: Call[] }> {
  const calls: Call[] = []
  const server = createServer((request, response) => {
    let raw = ''
    request.on('data', (chunk: Buffer) => { raw += chunk.toString() })
    request.on('end', () => {
      const call = { headers: request.headers, body: JSON.parse(raw) as Call['body'] }
      calls.push(call)
      answer(call, response)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`, calls }
}

async function relayWith (t: Test, url: string, timeout = '1000') {
  return await startRelay(t, { WEBHOOK_URL: url, WEBHOOK_TOKEN: 'hook-secret', WEBHOOK_TIMEOUT_MS: timeout })
}

t.test('webhook success: the backend message is published to the room as message_added', async (t) => {
  const hook = await backend(t, (call, response) => {
    const message = messageOf(chatOf(call.body.chat.uuid), { text: `saved: ${String(call.body.data.text)}`, id: 9001 })
    response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ message }))
  })
  const relay = await relayWith(t, hook.url)
  const sender = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const operator = await join(relay.wsUrl, '/chat', { token: operatorToken(2, { chat: 'c1' }) })
  t.teardown(() => closeAll(sender, operator))
  sender.send({ type: 'send_message', data: { text: 'hi', client_message_id: 'x1' } })
  for (const receiver of [sender, operator]) {
    const added = await receiver.next('message_added')
    t.match(added.data.message, { id: 9001, text: 'saved: hi' })
  }
  t.equal(hook.calls.length, 1)
  const [call] = hook.calls
  t.equal(call?.headers['api-token'], 'hook-secret', 'the Api-Token header carries WEBHOOK_TOKEN')
  t.match(call?.body, { event: 'send_message', chat: { uuid: 'c1' }, user: { id: 1, role: 'user' }, data: { text: 'hi', client_message_id: 'x1' } })
})

t.test('webhook 2xx without a body: the backend publishes itself, the relay adds nothing', async (t) => {
  const hook = await backend(t, (_call, response) => response.writeHead(204).end())
  const relay = await relayWith(t, hook.url)
  const sender = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  t.teardown(() => closeAll(sender))
  sender.send({ type: 'send_message', data: { text: 'hi' } })
  sender.send({ type: 'mark_message_read', data: { message_id: 5 } })
  const published = messageOf(chatOf('c1'))
  await t.resolves(async () => {
    while (hook.calls.length < 2) await new Promise((resolve) => setTimeout(resolve, 10))
  })
  await relay.post('/message', { message: published })
  await sender.waitFor((f) => f.data?.message?.id === published.id)
  t.same(sender.frames.map((f) => f.type), ['connected', 'message_added'], 'only the backend-published message arrived')
  t.same(hook.calls.map((call) => call.body.event), ['send_message', 'mark_message_read'])
  t.same(hook.calls[1]?.body.data, { message_id: 5 })
})

t.test('webhook marks: a returned message goes out as message_updated', async (t) => {
  const hook = await backend(t, (call, response) => {
    const message = messageOf(chatOf('c1'), { id: call.body.data.message_id, status: 'read' })
    response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ message }))
  })
  const relay = await relayWith(t, hook.url)
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const operator = await join(relay.wsUrl, '/chat', { token: operatorToken(2, { chat: 'c1' }) })
  t.teardown(() => closeAll(customer, operator))
  customer.send({ type: 'mark_message_read', data: { message_id: 77 } })
  t.match((await operator.next('message_updated')).data.message, { id: 77, status: 'read' })
})

t.test('webhook non-2xx: message_not_added for send_message, error for marks', async (t) => {
  const hook = await backend(t, (_call, response) => response.writeHead(500).end('boom'))
  const relay = await relayWith(t, hook.url)
  const sender = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const operator = await join(relay.wsUrl, '/chat', { token: operatorToken(2, { chat: 'c1' }) })
  t.teardown(() => closeAll(sender, operator))
  sender.send({ type: 'send_message', data: { text: 'hi', client_message_id: 'x2' } })
  t.same((await sender.next('message_not_added')).data, { reason: 'webhook_status', text: 'hi', client_message_id: 'x2' })
  sender.send({ type: 'mark_message_delivered', data: { message_id: 1 } })
  const error = await sender.next('error')
  t.equal(error.data.code, 'webhook_failed')
  t.match(error.data.message, /webhook_status/)
  await t.resolveMatch(relay.app.metrics.registry.getSingleMetricAsString('relay_webhook_calls_total'), /outcome="webhook_status"} 2/)
  t.equal(operator.ofType('message_not_added').length, 0, 'only the sender is told')
})

t.test('webhook timeout and unreachable backend: the sender is told', async (t) => {
  const hook = await backend(t, () => { /* never answers */ })
  const relay = await relayWith(t, hook.url, '200')
  const sender = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  t.teardown(() => closeAll(sender))
  sender.send({ type: 'send_message', data: { text: 'slow' } })
  t.equal((await sender.next('message_not_added')).data.reason, 'webhook_timeout')

  const gone = await relayWith(t, 'http://127.0.0.1:9/unreachable')
  const other = await join(gone.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  t.teardown(() => closeAll(other))
  other.send({ type: 'send_message', data: { text: 'nobody home' } })
  t.equal((await other.next('message_not_added')).data.reason, 'webhook_network')
})

t.test('webhook answer that is not a valid message is refused, not published', async (t) => {
  const hook = await backend(t, (_call, response) => response.writeHead(200, { 'content-type': 'application/json' }).end('{"message":{"id":"x"}}'))
  const relay = await relayWith(t, hook.url)
  const sender = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  t.teardown(() => closeAll(sender))
  sender.send({ type: 'send_message', data: { text: 'hi' } })
  t.equal((await sender.next('message_not_added')).data.reason, 'webhook_invalid_response')
})

t.test('update_typing is never sent to the backend', async (t) => {
  const hook = await backend(t, (_call, response) => response.writeHead(204).end())
  const relay = await relayWith(t, hook.url)
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const operator = await join(relay.wsUrl, '/chat', { token: operatorToken(2, { chat: 'c1' }) })
  t.teardown(() => closeAll(customer, operator))
  customer.send({ type: 'update_typing', data: { text: 'typing…', stopped: false } })
  t.equal((await operator.next('typing_updated')).data.text, 'typing…')
  t.equal(hook.calls.length, 0)
})

t.test('a webhook system message without type_role reaches nobody: the sender gets message_not_added', async (t) => {
  const hook = await backend(t, (call, response) => {
    const message = messageOf(chatOf(call.body.chat.uuid), { type: 'system', type_role: null })
    response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ message }))
  })
  const relay = await relayWith(t, hook.url)
  const sender = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  t.teardown(() => closeAll(sender))
  sender.send({ type: 'send_message', data: { text: 'hi', client_message_id: 'sys' } })
  t.same((await sender.next('message_not_added')).data, { reason: 'webhook_invalid_response', text: 'hi', client_message_id: 'sys' })
})

t.test('a slow webhook: queued events are bounded per socket, and a closed socket\'s queue never reaches the backend', async (t) => {
  const held: ServerResponse[] = []
  const hook = await backend(t, (_call, response) => { held.push(response) })
  const relay = await startRelay(t, { WEBHOOK_URL: hook.url, WEBHOOK_TOKEN: 'hook-secret', WEBHOOK_TIMEOUT_MS: '10000', CLIENT_QUEUE_MAX: '4' })
  const sender = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  t.teardown(() => { closeAll(sender); for (const response of held) response.destroy() })
  for (let index = 0; index < 6; index++) sender.send({ type: 'send_message', data: { text: `m${index}` } })
  await sender.waitFor(() => sender.ofType('error').length === 2)
  t.same(sender.ofType('error').map((f) => f.data.code), ['rate_limited', 'rate_limited'], 'the 5th and 6th frames are refused')
  await t.resolves(async () => { while (hook.calls.length < 1) await new Promise((resolve) => setTimeout(resolve, 10)) })
  sender.socket.terminate()
  await sender.closed
  // The first call is answered only now: the three queued behind it belong to a gone client.
  for (const response of held) response.writeHead(204).end()
  const dropped = async (): Promise<string> => await relay.app.metrics.registry.getSingleMetricAsString('relay_client_events_dropped_total')
  await t.resolves(async () => { while (!/socket_closed"} 3/.test(await dropped())) await new Promise((resolve) => setTimeout(resolve, 10)) })
  t.equal(hook.calls.length, 1, 'only the event in flight when the client left was sent')
  t.match(await dropped(), /queue_full"} 2/)
})
