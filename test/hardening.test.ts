import { connect as tcpConnect } from 'node:net'
import { createSigner } from 'fast-jwt'
import t from 'tap'
import WebSocket from 'ws'
import { closeAll, connect, join } from './helpers/client.js'
import { JWT_SECRET, customerToken, operatorToken, startRelay, token } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'
import { parsePrometheus, valueOf } from './helpers/prometheus.js'

/** `[[[…]]]` nested `depth` levels, as text: what a hostile client sends. */
function nested (depth: number, inner = '1'): string {
  return '['.repeat(depth) + inner + ']'.repeat(depth)
}

t.test('a frame nested thousands of levels deep is invalid_payload; the node and the socket keep working', async (t) => {
  const relay = await startRelay(t)
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const operator = await join(relay.wsUrl, '/chat', { token: operatorToken(2, { chat: 'c1' }) })
  t.teardown(() => closeAll(customer, operator))
  customer.send(`{"type": ${nested(5000)}}`)
  customer.send(`{"type": "send_message", "data": {"text": "x", "deep": ${nested(40)}}}`)
  const errors = [await customer.next('error'), await customer.waitFor((f) => f.type === 'error' && f !== customer.ofType('error')[0])]
  for (const error of errors) {
    t.equal(error.data.code, 'invalid_payload')
    t.match(error.data.message, /nested deeper than 32 levels/)
  }
  customer.send(`{"type": "send_message", "data": {"text": "still here", "deep": ${nested(30)}}}`)
  const added = await operator.waitFor((f) => f.type === 'message_added' && f.data.message.text === 'still here')
  t.ok(added, 'a frame within the depth bound is handled')
  t.equal((await fetch(`${relay.httpUrl}/health`)).status, 200)
})

t.test('an unknown type is named in the error only in part: the message stays short', async (t) => {
  const relay = await startRelay(t)
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  t.teardown(() => closeAll(customer))
  customer.send({ type: 'x'.repeat(30_000), data: {} })
  customer.send({ type: { a: 'b'.repeat(30_000) }, data: {} })
  await customer.waitFor(() => customer.ofType('error').length === 2)
  for (const error of customer.ofType('error')) {
    t.equal(error.data.code, 'unknown_type')
    t.ok(error.data.message.length < 200, `bounded: ${String(error.data.message.length)} characters`)
  }
})

t.test('a binary frame closes the socket with 1003; others in the chat are untouched', async (t) => {
  const relay = await startRelay(t)
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const operator = await join(relay.wsUrl, '/chat', { token: operatorToken(2, { chat: 'c1' }) })
  t.teardown(() => closeAll(customer, operator))
  customer.socket.send(Buffer.from(JSON.stringify({ type: 'send_message', data: { text: 'binary' } })), { binary: true })
  const closed = await customer.closed
  t.equal(closed.code, 1003)
  t.equal(operator.ofType('message_added').length, 0, 'the binary frame was not handled as an event')
  await relay.post('/message', { message: messageOf(chatOf('c1'), { text: 'after' }) })
  await operator.waitFor((f) => f.type === 'message_added' && f.data.message.text === 'after')
})

t.test('a long role claim is refused 4403 with a fixed reason that never echoes the claim', async (t) => {
  const relay = await startRelay(t)
  const role = `r${'é'.repeat(199)}`
  const client = connect(relay.wsUrl, '/chat', { token: token({ sub: '1', role, chat: 'c1' }) })
  const closed = await client.closed
  t.equal(closed.code, 4403)
  t.notMatch(closed.reason, /é/, 'the claim is not in the reason')
  t.ok(Buffer.byteLength(closed.reason) <= 123)
  const badClaims = connect(relay.wsUrl, '/broadcast', { token: token({ sub: '1', role: 'operator', sources: { widgets: ['x'.repeat(500), 7] } } as never) })
  const refused = await badClaims.closed
  t.equal(refused.code, 4401)
  t.ok(Buffer.byteLength(refused.reason) <= 123, refused.reason)
  t.notMatch(refused.reason, /xxxx/)
})

t.test('a socket is closed with 4401 when its token expires', async (t) => {
  const relay = await startRelay(t)
  const sign = createSigner({ key: JWT_SECRET, algorithm: 'HS256' })
  const exp = Math.floor(Date.now() / 1000) + 2
  const shortLived = await join(relay.wsUrl, '/chat', { token: sign({ sub: '1', role: 'user', chat: 'c1', exp }) })
  const longLived = await join(relay.wsUrl, '/chat', { token: customerToken(2, 'c1') })
  t.teardown(() => closeAll(shortLived, longLived))
  const closed = await shortLived.closed
  t.equal(closed.code, 4401)
  t.equal(closed.reason, 'token expired')
  t.ok(Date.now() >= exp * 1000, 'not before exp')
  t.ok(Date.now() < exp * 1000 + 2500, 'within a tick of exp')
  t.equal(longLived.socket.readyState, WebSocket.OPEN, 'the other socket stays')
})

t.test('ingest bodies nested past 32 levels answer 400 naming the depth, not 500', async (t) => {
  const relay = await startRelay(t)
  for (const [path, body] of [['/global', `{"a": ${nested(10_000)}}`], ['/message', `{"message": {"id": 1, "type": "standard", "chat": {"uuid": "c", "x": ${nested(40)}}}}`]] as const) {
    const response = await relay.app.inject({ method: 'POST', url: path, payload: body, headers: { 'api-token': 'test-api-token-primary', 'content-type': 'application/json' } })
    t.equal(response.statusCode, 400, path)
    t.match(JSON.parse(response.body).message, /nested deeper than 32 levels/)
  }
  const ok = await relay.app.inject({ method: 'POST', url: '/global', payload: `{"a": ${nested(30)}}`, headers: { 'api-token': 'test-api-token-primary', 'content-type': 'application/json; charset=utf-8' } })
  t.equal(ok.statusCode, 200, 'within the bound, with a charset')
})

t.test('a customer cannot mark a note or an operator-only system message; operators hear nothing of it', async (t) => {
  const relay = await startRelay(t)
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const operator = await join(relay.wsUrl, '/chat', { token: operatorToken(2, { chat: 'c1' }) })
  t.teardown(() => closeAll(customer, operator))
  const note = messageOf(chatOf('c1'), { type: 'note' })
  const forOperators = messageOf(chatOf('c1'), { type: 'system', type_role: 'operator' })
  const forCustomer = messageOf(chatOf('c1'), { type: 'system', type_role: 'user' })
  for (const message of [note, forOperators, forCustomer]) await relay.post('/message', { message })
  await customer.waitFor((f) => f.data?.message?.id === forCustomer.id)
  customer.send({ type: 'mark_message_read', data: { message_id: note.id } })
  customer.send({ type: 'mark_message_read', data: { message_id: forOperators.id } })
  customer.send({ type: 'mark_message_read', data: { message_id: forCustomer.id } })
  await customer.waitFor((f) => f.type === 'message_updated' && f.data.message.id === forCustomer.id)
  t.same(customer.ofType('error').map((f) => f.data.code), ['message_not_found', 'message_not_found'])
  t.equal(operator.ofType('message_updated').length, 0, 'operators got no read update for messages the customer never saw')
  operator.send({ type: 'mark_message_read', data: { message_id: note.id } })
  await operator.waitFor((f) => f.type === 'message_updated' && f.data.message.id === note.id)
  operator.send({ type: 'mark_message_read', data: { message_id: forCustomer.id } })
  const refused = await operator.next('error')
  t.equal(refused.data.code, 'message_not_found', 'nor an operator a system message meant for the customer')
})

t.test('typing and the messages the relay makes for a chat of unknown scope reach only consoles without sources', async (t) => {
  const relay = await startRelay(t)
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'unknown-chat') })
  const everything = await join(relay.wsUrl, '/broadcast', { token: operatorToken(2) })
  const filtered = await join(relay.wsUrl, '/broadcast', { token: operatorToken(3, { sources: { widgets: ['site'], departments: [7] } }) })
  t.teardown(() => closeAll(customer, everything, filtered))
  customer.send({ type: 'update_typing', data: { text: 'my card number is 4111', stopped: false } })
  await everything.next('typing_updated')
  customer.send({ type: 'send_message', data: { text: 'my card number is 4111' } })
  await everything.waitFor((f) => f.type === 'message_added')
  const added = await customer.next('message_added')
  customer.send({ type: 'mark_message_read', data: { message_id: added.data.message.id } })
  await everything.next('message_updated')
  await relay.post('/global', { marker: true })
  await filtered.next('global_updated')
  t.equal(filtered.ofType('message_added').length + filtered.ofType('message_updated').length + filtered.ofType('typing_updated').length, 0,
    'the filtered console saw nothing of the unknown chat: no draft, no message, no mark')
})

t.test('peer close codes outside the known set are counted as "other"', async (t) => {
  const relay = await startRelay(t)
  for (const code of [3001, 3002, 4999]) {
    const client = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
    client.socket.close(code)
    await client.closed
  }
  const client = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  client.socket.close(1000)
  await client.closed
  const closedWith = async (code: string): Promise<number> => {
    const families = parsePrometheus(await (await fetch(`${relay.httpUrl}/metrics`)).text())
    return valueOf(families, 'relay_sockets_closed_total', { endpoint: 'chat', code })
  }
  for (let attempt = 0; attempt < 50 && await closedWith('other') < 3; attempt++) await new Promise((resolve) => setTimeout(resolve, 20))
  t.equal(await closedWith('other'), 3)
  t.equal(await closedWith('1000'), 1)
  t.equal(await closedWith('4999'), 0, 'no series for a client-chosen code')
})

t.test('a refused socket whose peer never answers the close is cut within a short grace', async (t) => {
  const relay = await startRelay(t)
  const url = new URL(relay.wsUrl)
  const socket = tcpConnect(Number(url.port), url.hostname)
  const ended = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now())))
  let received = ''
  socket.on('data', (chunk: Buffer) => { received += chunk.toString('latin1') })
  socket.on('error', () => {})
  await new Promise((resolve) => socket.once('connect', resolve))
  socket.write('GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
  const start = Date.now()
  // The client reads the refusal (a 4401 close frame) and never answers it.
  const closedAt = await ended
  t.match(received, /101 Switching Protocols/)
  t.ok(received.includes('missing token'), 'the close frame says why')
  t.ok(closedAt - start < 5000, `cut after ${closedAt - start} ms (ws alone waits 30 s)`)
})

t.test('MAX_CONNECTIONS_PER_IP: the next socket from the address closes 4429; a freed slot admits again', async (t) => {
  const relay = await startRelay(t, { MAX_CONNECTIONS_PER_IP: '2' })
  const first = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const second = await join(relay.wsUrl, '/chat', { token: customerToken(2, 'c2') })
  const third = connect(relay.wsUrl, '/chat', { token: customerToken(3, 'c3') })
  t.teardown(() => closeAll(first, second, third))
  t.equal((await third.closed).code, 4429)
  t.equal(third.ofType('connected').length, 0)
  first.close()
  await first.closed
  const again = await join(relay.wsUrl, '/chat', { token: customerToken(4, 'c4') })
  t.teardown(() => closeAll(again))
  t.equal(again.ofType('connected').length, 1)
})

t.test('MAX_CONNECTIONS bounds the TCP connections of the node', async (t) => {
  const relay = await startRelay(t, { MAX_CONNECTIONS: '2' })
  const first = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const second = await join(relay.wsUrl, '/chat', { token: customerToken(2, 'c2') })
  t.teardown(() => closeAll(first, second))
  const third = connect(relay.wsUrl, '/chat', { token: customerToken(3, 'c3') })
  const outcome = await Promise.race([third.opened.then(() => 'opened', () => 'refused'), third.closed.then(() => 'refused')])
  t.equal(outcome, 'refused')
  second.close()
  await second.closed
  const again = await join(relay.wsUrl, '/chat', { token: customerToken(4, 'c4') })
  t.teardown(() => closeAll(again))
  t.pass('admitted once a connection was freed')
})

t.test('typing: text over 2,000 characters is invalid; a user relays at most TYPING_PER_SEC per chat, the rest counted', async (t) => {
  const relay = await startRelay(t)
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const second = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const operator = await join(relay.wsUrl, '/chat', { token: operatorToken(2, { chat: 'c1' }) })
  t.teardown(() => closeAll(customer, second, operator))
  customer.send({ type: 'update_typing', data: { text: 'x'.repeat(2001), stopped: false } })
  t.equal((await customer.next('error')).data.code, 'invalid_payload')
  // Two sockets of one user share the allowance: 10 drafts within a moment relay 2.
  for (let index = 0; index < 5; index++) {
    customer.send({ type: 'update_typing', data: { text: `a${index}`, stopped: false } })
    second.send({ type: 'update_typing', data: { text: `b${index}`, stopped: false } })
  }
  await operator.waitFor(() => operator.ofType('typing_updated').length >= 2)
  const dropped = async (): Promise<number> => valueOf(parsePrometheus(await (await fetch(`${relay.httpUrl}/metrics`)).text()), 'relay_typing_dropped_total')
  for (let attempt = 0; attempt < 100 && await dropped() < 8; attempt++) await new Promise((resolve) => setTimeout(resolve, 10))
  t.equal(await dropped(), 8)
  t.ok(operator.ofType('typing_updated').length <= 4, 'at most two per second (the burst may straddle a second)')
})

t.test('a chat\'s scope is remembered field by field: a later chat object without department keeps it', async (t) => {
  const relay = await startRelay(t)
  await relay.post('/update/chat', chatOf('c1', { widget: { source: 'lk' }, department: { id: 7 } }))
  await relay.post('/update/chat', chatOf('c1', { widget: { source: 'lk' } }))
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const dept7 = await join(relay.wsUrl, '/broadcast', { token: operatorToken(7, { sources: { departments: [7] } }) })
  const dept8 = await join(relay.wsUrl, '/broadcast', { token: operatorToken(8, { sources: { departments: [8] } }) })
  t.teardown(() => closeAll(customer, dept7, dept8))
  customer.send({ type: 'update_typing', data: { text: 'draft', stopped: false } })
  await dept7.next('typing_updated')
  await relay.post('/update/chat', chatOf('c1', { department: null }))
  customer.send({ type: 'update_typing', data: { text: 'draft 2', stopped: false } })
  await dept8.waitFor((f) => f.type === 'typing_updated' && f.data.text === 'draft 2')
  t.equal(dept8.ofType('typing_updated').length, 1, 'the department-8 console saw typing only after the department was cleared')
})
