import t from 'tap'
import { closeAll, connect, join } from './helpers/client.js'
import { customerToken, operatorToken, startRelay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

t.test('standalone send_message: the relay creates the message and everyone in the room gets it, the sender too', async (t) => {
  const relay = await startRelay(t)
  await relay.post('/update/chat', chatOf('c1', { widget: { source: 'lk' } }))
  const sender = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const operator = await join(relay.wsUrl, '/chat', { token: operatorToken(2, { chat: 'c1' }) })
  const lkConsole = await join(relay.wsUrl, '/broadcast', { token: operatorToken(3, { sources: { widgets: ['lk'] } }) })
  const siteConsole = await join(relay.wsUrl, '/broadcast', { token: operatorToken(4, { sources: { widgets: ['site'] } }) })
  t.teardown(() => closeAll(sender, operator, lkConsole, siteConsole))
  sender.send({ type: 'send_message', data: { text: 'first', client_message_id: 'local-1', attachments: ['a-uuid'] } })
  sender.send({ type: 'send_message', data: { text: 'second' } })
  for (const receiver of [sender, operator, lkConsole]) {
    await receiver.waitFor((f) => f.type === 'message_added' && f.data.message.text === 'second')
    const added = receiver.ofType('message_added').map((f) => f.data.message)
    t.equal(added.length, 2, receiver.name)
    const [first, second] = added
    t.match(first, {
      type: 'standard', type_role: 'user', status: 'new', text: 'first', client_message_id: 'local-1',
      chat: { uuid: 'c1', widget: { source: 'lk' } }, user: { id: 1, role: 'user' }, attachments: [{ uuid: 'a-uuid' }]
    })
    t.match(first.send_time, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$/, 'send_time is ISO 8601 with an offset')
    t.ok(second.id > first.id && second.message_index > first.message_index, 'id and message_index strictly increase')
  }
  const marker = messageOf(chatOf('c1', { widget: { source: 'site' } }))
  await relay.post('/message', { message: marker })
  await siteConsole.waitFor((f) => f.data?.message?.id === marker.id)
  t.equal(siteConsole.ofType('message_added').length, 1, 'the site console saw only the marker, not the lk chat messages')
})

t.test('standalone marks raise the status of a known message; an unknown one is an error', async (t) => {
  const relay = await startRelay(t)
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const operator = await join(relay.wsUrl, '/chat', { token: operatorToken(2, { chat: 'c1' }) })
  t.teardown(() => closeAll(customer, operator))
  const note = messageOf(chatOf('c1'), { type: 'note' })
  await relay.post('/message', { message: note })
  operator.send({ type: 'send_message', data: { text: 'hello' } })
  const created = (await customer.waitFor((f) => f.type === 'message_added' && f.data.message.text === 'hello')).data.message
  customer.send({ type: 'mark_message_read', data: { message_id: created.id } })
  const read = await operator.next('message_updated')
  t.match(read.data.message, { id: created.id, status: 'read', text: 'hello' })
  customer.send({ type: 'mark_message_delivered', data: { message_id: created.id } })
  await operator.waitFor((f) => f.type === 'message_updated' && f.data.message.id === created.id && f !== read)
  t.equal(operator.ofType('message_updated').at(-1)?.data.message.status, 'read', 'delivered after read does not lower the status')
  operator.send({ type: 'mark_message_read', data: { message_id: note.id } })
  await operator.waitFor((f) => f.type === 'message_updated' && f.data.message.id === note.id)
  customer.send({ type: 'mark_message_read', data: { message_id: 424242 } })
  const error = await customer.next('error')
  t.equal(error.data.code, 'message_not_found')
  t.equal(customer.frames.filter((f) => f.data?.message?.id === note.id).length, 0, 'a marked note keeps its type: never shown to the customer')
})

t.test('bad frames get an error with a code and the socket stays usable', async (t) => {
  const relay = await startRelay(t)
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const console1 = await join(relay.wsUrl, '/broadcast', { token: operatorToken(2) })
  t.teardown(() => closeAll(customer, console1))
  const cases: Array<[unknown, string, RegExp]> = [
    ['{not json', 'invalid_json', /JSON/],
    [{ type: 'delete_chat', data: {} }, 'unknown_type', /delete_chat/],
    [{ data: {} }, 'unknown_type', /expected one of/],
    ['[1,2]', 'unknown_type', /unknown/],
    [{ type: 'send_message', data: {} }, 'invalid_payload', /text/],
    [{ type: 'send_message', data: { text: 5 } }, 'invalid_payload', /text/],
    [{ type: 'mark_message_read', data: { message_id: 'x' } }, 'invalid_payload', /message_id/],
    [{ type: 'update_typing', data: { text: 'a' } }, 'invalid_payload', /stopped/],
    [{ type: 'update_typing' }, 'invalid_payload', /data/]
  ]
  for (const [index, [frame, code, message]] of cases.entries()) {
    customer.send(frame)
    await customer.waitFor(() => customer.ofType('error').length > index)
    const error = customer.ofType('error')[index]
    t.equal(error?.data.code, code, JSON.stringify(frame))
    t.match(error?.data.message, message)
  }
  customer.send({ type: 'send_message', data: { text: 'still here' } })
  await customer.waitFor((f) => f.type === 'message_added' && f.data.message.text === 'still here')
  console1.send({ type: 'send_message', data: { text: 'x' } })
  t.equal((await console1.next('error')).data.code, 'unknown_type', '/broadcast takes no client events but ping')
})

t.test('ping {} is answered pong {} on both endpoints, to that socket only, and counts against the rate limit', async (t) => {
  const relay = await startRelay(t, { RATE_LIMIT_PER_SEC: '1', RATE_LIMIT_BURST: '2' })
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'ping-chat') })
  const neighbour = await join(relay.wsUrl, '/chat', { token: customerToken(2, 'ping-chat') })
  const console1 = await join(relay.wsUrl, '/broadcast', { token: operatorToken(3) })
  t.teardown(() => closeAll(customer, neighbour, console1))
  customer.send({ type: 'ping', data: {} })
  t.same((await customer.next('pong')).data, {}, '/chat: pong {}')
  console1.send({ type: 'ping' })
  t.same((await console1.next('pong')).data, {}, '/broadcast: pong {}, data optional')
  customer.send({ type: 'ping', data: {} })
  customer.send({ type: 'ping', data: {} })
  t.equal((await customer.next('error')).data.code, 'rate_limited', 'a third ping within the burst is rate limited')
  t.same(neighbour.ofType('pong'), [], 'nobody else hears it')
})

t.test('rate limit: error rate_limited, then close 4429 under sustained abuse', async (t) => {
  const relay = await startRelay(t, { RATE_LIMIT_PER_SEC: '1', RATE_LIMIT_BURST: '3', ABUSE_STRIKES: '5' })
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const polite = await join(relay.wsUrl, '/chat', { token: customerToken(2, 'c1') })
  t.teardown(() => closeAll(customer, polite))
  for (let index = 0; index < 4; index++) customer.send({ type: 'update_typing', data: { stopped: true } })
  const limited = await customer.next('error')
  t.equal(limited.data.code, 'rate_limited')
  for (let index = 0; index < 10; index++) customer.send({ type: 'update_typing', data: { stopped: true } })
  const closed = await customer.closed
  t.equal(closed.code, 4429)
  polite.send({ type: 'send_message', data: { text: 'unaffected' } })
  await polite.waitFor((f) => f.type === 'message_added' && f.data.message.text === 'unaffected')
})

t.test('too many invalid frames close the socket with 4429', async (t) => {
  const relay = await startRelay(t, { ABUSE_STRIKES: '3' })
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  for (let index = 0; index < 3; index++) customer.send('nope')
  t.equal((await customer.closed).code, 4429)
  t.equal(customer.ofType('error').length, 3)
})

t.test('a frame over MAX_FRAME_BYTES closes the socket with 1009', async (t) => {
  const relay = await startRelay(t, { MAX_FRAME_BYTES: '1024' })
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  customer.send({ type: 'send_message', data: { text: 'x'.repeat(2048) } })
  t.equal((await customer.closed).code, 1009)
  const again = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  t.teardown(() => closeAll(again))
  again.send({ type: 'send_message', data: { text: 'small' } })
  await again.waitFor((f) => f.type === 'message_added', 3000, 'the relay keeps serving')
})

t.test('with the bus down the sender is told: message_not_added and error, never silence', async (t) => {
  const relay = await startRelay(t)
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  t.teardown(() => closeAll(customer))
  await relay.app.stores.bus.close()
  customer.send({ type: 'send_message', data: { text: 'lost?', client_message_id: 7 } })
  t.same((await customer.next('message_not_added')).data, { reason: 'unavailable', text: 'lost?', client_message_id: 7 })
  customer.send({ type: 'update_typing', data: { stopped: false } })
  t.equal((await customer.next('error')).data.code, 'unavailable')
})

t.test('closing the relay closes sockets with 1012', async (t) => {
  const relay = await startRelay(t)
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const console1 = await join(relay.wsUrl, '/broadcast', { token: operatorToken(2) })
  await relay.app.close()
  t.equal((await customer.closed).code, 1012)
  t.equal((await console1.closed).code, 1012)
})

t.test('a socket that stops answering pings is terminated; a live one stays', async (t) => {
  const relay = await startRelay(t, { PING_INTERVAL_MS: '50' })
  const dead = connect(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  await dead.next('connected')
  // ws answers pings by itself; stop the reads of the dead client so no pong goes back.
  const live = await join(relay.wsUrl, '/chat', { token: customerToken(2, 'c1') })
  t.teardown(() => closeAll(live, dead))
  const raw = (dead.socket as unknown as { _socket: { pause: () => void } })._socket
  raw.pause()
  const deadline = Date.now() + 3000
  while (relay.app.sockets.hub.size > 1 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 25))
  t.equal(relay.app.sockets.hub.size, 1, 'the silent socket was terminated')
  live.send({ type: 'update_typing', data: { stopped: true } })
  t.equal(live.socket.readyState, live.socket.OPEN, 'the answering socket is still open after many pings')
})

t.test('a slow consumer is closed with 1013 and counted; the others get everything', async (t) => {
  const relay = await startRelay(t, { MAX_BUFFERED_BYTES: '65536' })
  const slow = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const fast = await join(relay.wsUrl, '/chat', { token: customerToken(2, 'c1') })
  t.teardown(() => closeAll(slow, fast))
  const raw = (slow.socket as unknown as { _socket: { pause: () => void } })._socket
  raw.pause()
  const text = 'y'.repeat(50_000)
  let lastId = 0
  for (let index = 0; index < 300; index++) {
    const message = messageOf(chatOf('c1'), { text })
    lastId = message.id as number
    await relay.post('/message', { message })
  }
  await fast.waitFor((f) => f.data?.message?.id === lastId, 10_000)
  t.equal(fast.ofType('message_added').length, 300, 'the fast socket got all 300')
  const metrics = await relay.app.metrics.registry.getSingleMetricAsString('relay_slow_consumers_total')
  t.match(metrics, /relay_slow_consumers_total 1/)
  const deadline = Date.now() + 3000
  while (relay.app.sockets.hub.size > 1 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 25))
  t.equal(relay.app.sockets.hub.size, 1, 'the slow socket is gone')
})
