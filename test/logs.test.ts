import { randomUUID } from 'node:crypto'
import { createServer, request as httpRequest } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Writable } from 'node:stream'
import { createSigner } from 'fast-jwt'
import t, { type Test } from 'tap'
import { closeAll, connect, join, type TestClient } from './helpers/client.js'
import { API_TOKEN, customerToken, JWT_SECRET, operatorToken, ROTATED_API_TOKEN, startRelay, token } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

const WEBHOOK_TOKEN = `webhook-token-${randomUUID()}`
const WRONG_API_TOKEN = `wrong-api-token-${randomUUID()}`

/** A message text nobody else writes: if it shows up in a log line, that line leaked it. */
const secretText = (what: string): string => `${what}-TEXT-${randomUUID()}`

/** Captures every pino line of the relays under test, at the most verbose level. */
function captureLogs (): { lines: string[], logger: { level: string, stream: Writable } } {
  const lines: string[] = []
  const stream = new Writable({
    write (chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString().split('\n').filter((line) => line !== ''))
      done()
    }
  })
  return { lines, logger: { level: 'trace', stream } }
}

/** A backend: answers send_message by the text's prefix (fail → 500, slow → after the timeout), marks with 204. */
async function backend (t: Test): Promise<string> {
  const server = createServer((request, response) => {
    let raw = ''
    request.on('data', (chunk: Buffer) => { raw += chunk.toString() })
    request.on('end', () => {
      const call = JSON.parse(raw) as { event: string, chat: { uuid: string }, data: { text?: string } }
      const text = call.data.text ?? ''
      if (call.event !== 'send_message') return response.writeHead(204).end()
      if (text.startsWith('fail')) return response.writeHead(500).end(`backend error about ${text}`)
      if (text.startsWith('slow')) return setTimeout(() => response.writeHead(204).end(), 600)
      const message = messageOf(chatOf(call.chat.uuid), { text })
      response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ message }))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/events`
}

/** A raw HTTP exchange (query strings and upgrades included), answered or refused. */
async function rawRequest (url: string, options: { method?: string, headers?: Record<string, string>, body?: string }): Promise<number> {
  return await new Promise((resolve) => {
    const outgoing = httpRequest(url, { method: options.method ?? 'GET', headers: options.headers ?? {}, agent: false })
    outgoing.once('response', (response) => { response.resume(); response.once('end', () => resolve(response.statusCode ?? 0)) })
    outgoing.once('upgrade', (_response, socket) => { socket.destroy(); resolve(101) })
    outgoing.once('error', () => resolve(0))
    outgoing.end(options.body)
  })
}

t.test('a realistic session logs one line per socket open and close, and never a token, an Api-Token or message text', async (t) => {
  const { lines, logger } = captureLogs()
  const hookUrl = await backend(t)
  const relay = await startRelay(t, {
    WEBHOOK_URL: hookUrl, WEBHOOK_TOKEN, WEBHOOK_TIMEOUT_MS: '300', MAX_FRAME_BYTES: '4096'
  }, logger)
  const unreachable = await startRelay(t, { WEBHOOK_URL: 'http://127.0.0.1:9/events', WEBHOOK_TOKEN, WEBHOOK_TIMEOUT_MS: '300' }, logger)
  const texts: string[] = []
  const text = (what: string): string => {
    const value = secretText(what)
    texts.push(value)
    return value
  }

  // Ingest with both rotated tokens, and every refusal path with message text in the body.
  const post = async (path: string, payload: string, headers: Record<string, string>): Promise<number> =>
    (await relay.app.inject({ method: 'POST', url: path, payload, headers })).statusCode
  const json = { 'content-type': 'application/json' }
  t.equal(await post('/message', JSON.stringify({ message: messageOf(chatOf('c1'), { text: text('ingest') }) }), { ...json, 'api-token': API_TOKEN }), 200)
  t.equal(await post('/message', JSON.stringify({ message: messageOf(chatOf('c1'), { type: 'note', text: text('note') }) }), { ...json, 'api-token': ROTATED_API_TOKEN }), 200)
  t.equal(await post('/message', JSON.stringify({ message: { type: 'standard', text: text('invalid'), chat: { uuid: 'c1' } } }), { ...json, 'api-token': API_TOKEN }), 400)
  t.equal(await post('/message', `{"message": {"text": "${text('malformed')}"`, { ...json, 'api-token': API_TOKEN }), 400)
  t.equal(await post('/message', text('plain'), { 'content-type': 'text/plain', 'api-token': API_TOKEN }), 415)
  t.equal(await post('/message', JSON.stringify({ message: messageOf(chatOf('c1'), { text: text('big').padEnd(1_100_000, 'x') }) }), { ...json, 'api-token': API_TOKEN }), 413)
  t.equal(await post('/global', JSON.stringify({ text: text('unauthorized') }), { ...json, 'api-token': WRONG_API_TOKEN }), 401)
  t.equal(await post('/update/operators', JSON.stringify([{ id: 1, firstname: text('operator') }]), { ...json, 'api-token': API_TOKEN }), 200)

  // Sockets: query token and Bearer; refusals; tokens on paths that are not sockets.
  const customerJwt = customerToken(1, 'c1')
  const operatorJwt = operatorToken(2, { chat: 'c1' })
  const consoleJwt = operatorToken(3)
  const expiredJwt = createSigner({ key: JWT_SECRET, expiresIn: 1 })({ sub: '4', role: 'user', chat: 'c1', iat: Math.floor(Date.now() / 1000) - 100 })
  const customerAsConsoleJwt = customerToken(5, 'c1')
  const wrongChatJwt = customerToken(6, 'c2')
  const strayJwt = token({ sub: '7', role: 'user', chat: 'c1' })
  const jwts = [customerJwt, operatorJwt, consoleJwt, expiredJwt, customerAsConsoleJwt, wrongChatJwt, strayJwt]

  const customer = await join(relay.wsUrl, '/chat', { token: customerJwt, name: 'customer' })
  const operator = await join(relay.wsUrl, '/chat', { bearer: operatorJwt, name: 'operator' })
  const console1 = await join(relay.wsUrl, '/broadcast', { token: consoleJwt, name: 'console' })
  const offline = await join(unreachable.wsUrl, '/chat', { token: customerJwt, name: 'customer on a relay whose webhook is down' })
  t.teardown(() => closeAll(customer, operator, console1, offline))
  const refused: TestClient[] = [
    connect(relay.wsUrl, '/chat', { token: `${customerJwt}x` }),
    connect(relay.wsUrl, '/chat', { bearer: expiredJwt }),
    connect(relay.wsUrl, '/broadcast', { token: customerAsConsoleJwt }),
    connect(relay.wsUrl, '/chat', { token: wrongChatJwt, query: { chat: 'c1' } })
  ]
  t.same((await Promise.all(refused.map(async (client) => (await client.closed).code))).sort(), [4401, 4401, 4403, 4403])
  await rawRequest(`${relay.httpUrl}/nowhere?token=${strayJwt}`, {})
  await rawRequest(`${relay.httpUrl}/online-users?token=${strayJwt}`, { headers: { 'api-token': API_TOKEN } })
  const upgrade = { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': randomUUID().slice(0, 22) + '==' }
  await rawRequest(`${relay.httpUrl}/health?token=${strayJwt}`, { headers: upgrade })
  await rawRequest(`${relay.httpUrl}/nowhere?token=${strayJwt}`, { headers: upgrade })

  // Client events with text: success, backend failure, timeout, network error; typing; bad frames.
  const saved = text('saved')
  customer.send({ type: 'send_message', data: { text: saved, client_message_id: 'm1' } })
  await operator.waitFor((frame) => frame.data?.message?.text === saved)
  customer.send({ type: 'send_message', data: { text: `fail ${text('failing')}` } })
  t.equal((await customer.next('message_not_added')).data.reason, 'webhook_status')
  customer.send({ type: 'send_message', data: { text: `slow ${text('slow')}` } })
  await customer.waitFor((frame) => frame.type === 'message_not_added' && frame.data.reason === 'webhook_timeout')
  offline.send({ type: 'send_message', data: { text: text('offline') } })
  t.equal((await offline.next('message_not_added')).data.reason, 'webhook_network')
  customer.send({ type: 'update_typing', data: { text: text('typing'), stopped: false } })
  await operator.next('typing_updated')
  operator.send({ type: 'update_typing', data: { text: text('operator-typing'), stopped: false } })
  await customer.next('typing_updated')
  customer.send({ type: 'mark_message_read', data: { message_id: 1 } })
  const badFrames = [
    `{"type": "send_message", "data": {"text": "${text('broken-json')}"`,
    JSON.stringify({ type: 'send_message', data: { text: text('too-long').padEnd(20_001, 'x').slice(0, 3000), attachments: 'no' } }),
    JSON.stringify({ type: 'delete_everything', data: { text: text('unknown-type') } }),
    JSON.stringify({ type: 'update_typing', data: { text: text('no-stopped') } })
  ]
  for (const frame of badFrames) customer.send(frame)
  await customer.waitFor(() => customer.ofType('error').length >= badFrames.length)
  console1.send({ type: 'send_message', data: { text: text('console') } })
  await console1.next('error')
  const oversized = await join(relay.wsUrl, '/chat', { token: customerJwt, name: 'oversized' })
  oversized.send(JSON.stringify({ type: 'send_message', data: { text: text('oversized').padEnd(5000, 'x') } }))
  t.equal((await oversized.closed).code, 1009)

  for (const client of [customer, operator, console1, offline]) client.close()
  await Promise.all([customer, operator, console1, offline].map(async (client) => await client.closed))
  await new Promise((resolve) => setImmediate(resolve))

  const entries = lines.map((line) => JSON.parse(line) as Record<string, unknown>)
  t.ok(entries.length > 30, `pino JSON lines were captured (${entries.length})`)
  const opened = entries.filter((entry) => entry.msg === 'socket open')
  const closed = entries.filter((entry) => entry.msg === 'socket closed')
  t.equal(opened.length, 5, 'one line per socket open')
  t.equal(closed.length, 5, 'one line per socket close')
  for (const entry of opened) t.match(entry, { endpoint: /^(chat|broadcast)$/, role: /^(user|operator)$/, userId: /^\d+$/ })
  for (const entry of closed) t.match(entry, { endpoint: /^(chat|broadcast)$/, role: /^(user|operator)$/, userId: /^\d+$/, code: Number, droppedWhileClosing: Number })
  t.same(closed.map((entry) => entry.code).sort(), [1005, 1005, 1005, 1005, 1009], 'with the code the relay sent (1009) or the peer did (1005: none)')

  const secrets = [API_TOKEN, ROTATED_API_TOKEN, WRONG_API_TOKEN, WEBHOOK_TOKEN, JWT_SECRET, ...jwts, ...texts]
  // A JWT's signature alone identifies it too.
  for (const jwt of jwts) secrets.push(jwt.split('.')[2] as string)
  for (const secret of secrets) {
    const leaks = lines.filter((line) => line.includes(secret))
    t.same(leaks, [], `no line contains ${secret.slice(0, 16)}…`)
  }
  t.ok(lines.every((line) => !/[?&]token=/.test(line)), 'no line carries a token query parameter')
})
