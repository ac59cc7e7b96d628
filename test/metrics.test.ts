import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { closeAll, connect, join } from './helpers/client.js'
import { parsePrometheus, valueOf, type Family } from './helpers/prometheus.js'
import { customerToken, operatorToken, startRelay, type Relay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

/** A backend whose answer depends on the text: "ok" → a message, "later" → 204, anything else → 500. */
async function backend (t: Test): Promise<string> {
  const server = createServer((request, response) => {
    let raw = ''
    request.on('data', (chunk: Buffer) => { raw += chunk.toString() })
    request.on('end', () => {
      const call = JSON.parse(raw) as { chat: { uuid: string }, data: { text?: string } }
      if (call.data.text === 'later') return response.writeHead(204).end()
      if (call.data.text !== 'ok') return response.writeHead(500).end()
      const message = messageOf(chatOf(call.chat.uuid, { widget: { source: 'lk' } }), { text: 'ok' })
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ message }))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`
}

async function scrape (t: Test, relay: Relay): Promise<Map<string, Family>> {
  const answer = await relay.app.inject({ method: 'GET', url: '/metrics' })
  t.equal(answer.statusCode, 200)
  t.match(answer.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  return parsePrometheus(answer.body)
}

/** Scrapes until `ready` holds (socket closes are counted when the server sees them), bounded. */
async function scrapeUntil (t: Test, relay: Relay, ready: (families: Map<string, Family>) => boolean, ms = 3000): Promise<Map<string, Family>> {
  const deadline = Date.now() + ms
  for (;;) {
    const families = await scrape(t, relay)
    if (ready(families) || Date.now() > deadline) return families
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

t.test('/metrics parses as Prometheus text and every series of the issue moves with the traffic', async (t) => {
  const relay = await startRelay(t, { WEBHOOK_URL: await backend(t), WEBHOOK_TIMEOUT_MS: '2000', RATE_LIMIT_BURST: '3', RATE_LIMIT_PER_SEC: '0.01', ABUSE_STRIKES: '100' })
  const before = await scrape(t, relay)
  for (const name of ['relay_sockets_open', 'relay_sockets_closed_total', 'relay_events_accepted_total', 'relay_events_rejected_total',
    'relay_frames_sent_total', 'relay_frames_dropped_total', 'relay_slow_consumers_total', 'relay_fanout_seconds', 'relay_client_frames_total',
    'relay_webhook_calls_total', 'relay_webhook_seconds', 'relay_bus_up', 'relay_bus_reconnects_total', 'relay_draining',
    'relay_process_cpu_seconds_total', 'relay_nodejs_eventloop_lag_seconds']) {
    t.ok(before.has(name), `${name} is exposed`)
  }
  t.equal(before.get('relay_fanout_seconds')?.type, 'histogram')
  t.equal(valueOf(before, 'relay_bus_up'), 1, 'the bus is up')
  t.equal(valueOf(before, 'relay_draining'), 0, 'not draining')

  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const operator = await join(relay.wsUrl, '/chat', { bearer: operatorToken(2, { chat: 'c1' }) })
  const console1 = await join(relay.wsUrl, '/broadcast', { token: operatorToken(3) })
  const chatty = await join(relay.wsUrl, '/chat', { token: customerToken(4, 'c2') })
  const refused = connect(relay.wsUrl, '/broadcast', { token: customerToken(5, 'c1') })
  t.teardown(() => closeAll(customer, operator, console1, chatty))
  t.equal((await refused.closed).code, 4403)

  let families = await scrape(t, relay)
  t.equal(valueOf(families, 'relay_sockets_open', { endpoint: 'chat', role: 'user' }), 2, 'open customer sockets')
  t.equal(valueOf(families, 'relay_sockets_open', { endpoint: 'chat', role: 'operator' }), 1, 'open operator chat sockets')
  t.equal(valueOf(families, 'relay_sockets_open', { endpoint: 'broadcast', role: 'operator' }), 1, 'open consoles')
  t.equal(valueOf(families, 'relay_sockets_closed_total', { endpoint: 'broadcast', code: '4403' }), 1, 'a refused socket is counted by its code')

  // Ingest on every route: a standard message reaches customer, operator and console (3 frames).
  const sentBefore = valueOf(families, 'relay_frames_sent_total')
  const fanoutsBefore = valueOf(families, 'relay_fanout_seconds_count')
  const message = messageOf(chatOf('c1'))
  for (const [path, body] of [['/message', { message }], ['/update/chat', chatOf('c1')], ['/update/operators', [{ id: 3 }]],
    ['/global', { unread: 1 }], ['/notifications/chat', chatOf('c1', { operator_user: { id: 3 } })]] as const) {
    t.equal((await relay.post(path, body)).statusCode, 200, `POST ${path}`)
  }
  await console1.next('chat_notification')
  await customer.waitFor((frame) => frame.data?.message?.id === message.id)
  await operator.waitFor((frame) => frame.data?.message?.id === message.id)
  families = await scrape(t, relay)
  for (const source of ['message', 'update_chat', 'update_operators', 'global', 'notification']) {
    t.equal(valueOf(families, 'relay_events_accepted_total', { source }), 1, `events accepted from ${source}`)
  }
  t.equal(valueOf(families, 'relay_frames_sent_total') - sentBefore, 3 + 4, 'frames sent: 3 for the message, 1 each for the four console events')
  t.ok(valueOf(families, 'relay_fanout_seconds_count') - fanoutsBefore >= 5, 'fan-out time observed per event')

  // Client events through the webhook: a message, an empty 2xx, a failure; then bad and rate-limited frames.
  customer.send({ type: 'send_message', data: { text: 'ok' } })
  await operator.waitFor((frame) => frame.type === 'message_added' && frame.data.message.text === 'ok')
  customer.send({ type: 'send_message', data: { text: 'later' } })
  customer.send({ type: 'send_message', data: { text: 'boom' } })
  await customer.next('message_not_added')
  for (let index = 0; index < 6; index++) chatty.send({ type: 'update_typing', data: { stopped: index % 2 === 0 } })
  chatty.send('{ not json')
  await chatty.waitFor(() => chatty.ofType('error').length >= 4)
  families = await scrape(t, relay)
  t.equal(valueOf(families, 'relay_webhook_calls_total', { outcome: 'message' }), 1, 'webhook answered with a message')
  t.equal(valueOf(families, 'relay_webhook_calls_total', { outcome: 'accepted' }), 1, 'webhook answered 2xx without a body')
  t.equal(valueOf(families, 'relay_webhook_calls_total', { outcome: 'webhook_status' }), 1, 'webhook answered 500')
  t.equal(valueOf(families, 'relay_webhook_seconds_count'), 3, 'webhook latency observed per call')
  t.equal(valueOf(families, 'relay_events_accepted_total', { source: 'send_message' }), 1, 'the webhook message was published')
  t.equal(valueOf(families, 'relay_client_frames_total', { outcome: 'accepted' }), 3 + 3, 'accepted client frames')
  t.equal(valueOf(families, 'relay_client_frames_total', { outcome: 'rate_limited' }), 4, 'rate-limited frames (burst of 3)')
  t.equal(valueOf(families, 'relay_client_frames_total', { outcome: 'invalid' }), 0, 'the bad frame was rate limited first')

  // Closing sockets moves the gauge down and counts the close code.
  chatty.close()
  families = await scrapeUntil(t, relay, (current) => valueOf(current, 'relay_sockets_closed_total', { endpoint: 'chat', code: '1005' }) === 1)
  t.equal(valueOf(families, 'relay_sockets_closed_total', { endpoint: 'chat', code: '1005' }), 1, 'the close is counted with its code')
  t.equal(valueOf(families, 'relay_sockets_open', { endpoint: 'chat', role: 'user' }), 1, 'and the open gauge went down')

  // With the bus gone, ingest is refused (503) and counted as rejected, never accepted.
  await relay.app.stores.bus.close()
  t.equal((await relay.post('/message', { message: messageOf(chatOf('c1')) })).statusCode, 503)
  families = await scrape(t, relay)
  t.equal(valueOf(families, 'relay_events_rejected_total', { source: 'message' }), 1, 'a refused event is counted as rejected')
  t.equal(valueOf(families, 'relay_events_accepted_total', { source: 'message' }), 1, 'and not as accepted')
})

t.test('/metrics is hidden from the OpenAPI document and needs no token', async (t) => {
  const relay = await startRelay(t)
  const answer = await relay.app.inject({ method: 'GET', url: '/metrics' })
  t.equal(answer.statusCode, 200)
  t.doesNotThrow(() => parsePrometheus(answer.body))
  const openapi = (await relay.app.inject({ method: 'GET', url: '/openapi.json' })).json() as { paths: Record<string, unknown> }
  t.notOk('/metrics' in openapi.paths)
})

t.test('relay_bus_up falls to 0 once the bus is closed', async (t) => {
  const relay = await startRelay(t)
  t.equal(valueOf(await scrape(t, relay), 'relay_bus_up'), 1, 'up while the relay runs')
  await relay.app.close()
  const metric = await relay.app.metrics.registry.getSingleMetricAsString('relay_bus_up')
  t.equal(valueOf(parsePrometheus(`${metric}\n`), 'relay_bus_up'), 0, 'down after close')
})
