import { Writable } from 'node:stream'
import t from 'tap'
import { closeAll, connect, join } from './helpers/client.js'
import { API_TOKEN, customerToken, operatorToken, startRelay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

function metricValue (text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((entry) => entry.startsWith(`${name}${labels === '' ? ' ' : `{${labels}} `}`))
  return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1))
}

t.test('/metrics is Prometheus text and its counters move when events flow', async (t) => {
  const relay = await startRelay(t)
  const scrape = async (): Promise<string> => {
    const answer = await relay.app.inject({ method: 'GET', url: '/metrics' })
    t.match(answer.headers['content-type'], /text\/plain/)
    return answer.body
  }
  const before = await scrape()
  for (const line of before.split('\n').filter((entry) => entry !== '' && !entry.startsWith('#'))) {
    t.match(line, /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? (-?[0-9.e+-]+|nan|[+-]inf)$/i, 'sample line parses')
  }
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const console1 = await join(relay.wsUrl, '/broadcast', { token: operatorToken(2) })
  t.teardown(() => closeAll(customer, console1))
  const message = messageOf(chatOf('c1'))
  await relay.post('/message', { message })
  await console1.waitFor((f) => f.data?.message?.id === message.id)
  await customer.waitFor((f) => f.data?.message?.id === message.id)
  customer.send('not json')
  await customer.next('error')
  const after = await scrape()
  t.equal(metricValue(after, 'relay_sockets_open', 'endpoint="chat",role="user"'), 1)
  t.equal(metricValue(after, 'relay_sockets_open', 'endpoint="broadcast",role="operator"'), 1)
  t.equal(metricValue(after, 'relay_events_accepted_total', 'source="message"'), 1)
  t.ok(metricValue(after, 'relay_frames_sent_total') >= 2, 'frames sent counted')
  t.equal(metricValue(after, 'relay_client_frames_total', 'outcome="invalid"'), 1)
  t.ok(metricValue(after, 'relay_fanout_seconds_count') >= 2, 'fan-out time observed')
  t.equal(metricValue(after, 'relay_bus_up'), 1)
  customer.close()
  await customer.closed
  const deadline = Date.now() + 2000
  let closedCount = 0
  while (Date.now() < deadline && closedCount === 0) {
    closedCount = metricValue(await scrape(), 'relay_sockets_closed_total', 'endpoint="chat",code="1005"')
  }
  t.equal(closedCount, 1, 'the close is counted with its code')
})

t.test('no log line carries a token, an Api-Token or message text', async (t) => {
  const lines: string[] = []
  const stream = new Writable({ write (chunk: Buffer, _encoding, done) { lines.push(...chunk.toString().split('\n').filter(Boolean)); done() } })
  const relay = await startRelay(t, { WEBHOOK_URL: 'http://127.0.0.1:9/down', WEBHOOK_TIMEOUT_MS: '200' }, { level: 'trace', stream })
  const customerJwt = customerToken(1, 'c1')
  const operatorJwt = operatorToken(2)
  const secretText = 'SECRET-MESSAGE-TEXT-42'
  const customer = await join(relay.wsUrl, '/chat', { token: customerJwt })
  const console1 = await join(relay.wsUrl, '/broadcast', { bearer: operatorJwt })
  const refused = connect(relay.wsUrl, '/chat', { token: `${customerJwt}tampered` })
  await refused.closed
  t.teardown(() => closeAll(customer, console1))
  await relay.post('/message', { message: messageOf(chatOf('c1'), { text: secretText }) })
  await relay.post('/message', { message: { id: 1, type: 'standard', text: secretText } })
  await relay.app.inject({ method: 'POST', url: '/global', payload: { text: secretText }, headers: { 'api-token': 'WRONG-API-TOKEN' } })
  customer.send({ type: 'send_message', data: { text: secretText } })
  await customer.next('message_not_added')
  customer.send({ type: 'update_typing', data: { text: secretText, stopped: false } })
  customer.send(`{"broken": "${secretText}`)
  await customer.next('error')
  customer.close()
  await customer.closed
  await new Promise((resolve) => setImmediate(resolve))
  t.ok(lines.length > 5, `logs were captured (${lines.length} lines)`)
  t.ok(lines.some((line) => line.includes('"socket open"')), 'socket open is logged')
  t.ok(lines.some((line) => line.includes('"socket closed"') && line.includes('"code"')), 'socket close is logged with its code')
  for (const secret of [customerJwt, operatorJwt, API_TOKEN, 'WRONG-API-TOKEN', secretText, 'hook-secret']) {
    t.equal(lines.filter((line) => line.includes(secret)).length, 0, `no line contains ${secret.slice(0, 12)}…`)
  }
})
