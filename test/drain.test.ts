import { request } from 'node:http'
import t from 'tap'
import { closeAll, connect, join, type TestClient } from './helpers/client.js'
import { buildRelay, freePort, RelayProcess } from './helpers/process.js'
import { customerToken, JWT_SECRET, operatorToken, startRelay, type Tap } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

const API_TOKEN = 'drain-test-api-token'
const DRAIN_WINDOW_MS = 1500
const SHUTDOWN_TIMEOUT_MS = 6000

interface Closed { client: TestClient, code: number, at: number }

const closedAt = async (client: TestClient): Promise<Closed> => {
  const { code } = await client.closed
  return { client, code, at: Date.now() }
}

async function startProcess (t: Tap): Promise<{ relay: RelayProcess, httpUrl: string, wsUrl: string }> {
  const port = await freePort()
  const relay = new RelayProcess(t, server, {
    NODE_ENV: 'production',
    PORT: String(port),
    HOST: '127.0.0.1',
    API_TOKEN,
    JWT_SECRET,
    LOG_LEVEL: 'info',
    DRAIN_WINDOW_MS: String(DRAIN_WINDOW_MS),
    SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS)
  })
  await relay.waitForLine((line) => line.includes('Server listening at'), 30_000, 'listening')
  return { relay, httpUrl: `http://127.0.0.1:${port}`, wsUrl: `ws://127.0.0.1:${port}` }
}

/** A POST whose headers are sent now and whose body is finished later: in flight across the shutdown. */
function slowPost (url: string, path: string, body: string): { finish: () => void, answer: Promise<{ status: number, body: string }> } {
  const bytes = Buffer.from(body)
  const outgoing = request(new URL(path, url), {
    method: 'POST',
    agent: false,
    headers: { 'api-token': API_TOKEN, 'content-type': 'application/json', 'content-length': bytes.length }
  })
  const answer = new Promise<{ status: number, body: string }>((resolve, reject) => {
    outgoing.once('error', reject)
    outgoing.once('response', (response) => {
      let text = ''
      response.on('data', (chunk: Buffer) => { text += chunk.toString() })
      response.once('end', () => resolve({ status: response.statusCode ?? 0, body: text }))
    })
  })
  const half = Math.floor(bytes.length / 2)
  outgoing.write(bytes.subarray(0, half))
  outgoing.flushHeaders()
  return { finish: () => outgoing.end(bytes.subarray(half)), answer }
}

let server: string
t.before(async () => {
  server = await buildRelay(t)
})

t.test('SIGTERM drains: /ready 503, new sockets 1012, open sockets 1012 spread over the window, in-flight request answered, exit 0', async (t) => {
  const { relay, httpUrl, wsUrl } = await startProcess(t)
  t.equal((await fetch(`${httpUrl}/ready`)).status, 200, 'ready before the signal')

  const customerJwts = [1, 2, 3, 4].map((id) => customerToken(id, `chat-${id}`))
  const operatorJwts = [operatorToken(11, { chat: 'chat-1' }), operatorToken(12, { chat: 'chat-2' })]
  const consoleJwts = [operatorToken(21), operatorToken(22, { sources: { widgets: ['lk'] } })]
  const clients = [
    ...await Promise.all(customerJwts.map(async (token) => await join(wsUrl, '/chat', { token }))),
    ...await Promise.all(operatorJwts.map(async (bearer) => await join(wsUrl, '/chat', { bearer }))),
    ...await Promise.all(consoleJwts.map(async (token) => await join(wsUrl, '/broadcast', { token })))
  ]
  t.teardown(() => closeAll(...clients))
  const closes = Promise.all(clients.map(closedAt))
  const inFlight = slowPost(httpUrl, '/message', JSON.stringify({ message: messageOf(chatOf('chat-1'), { text: 'in flight' }) }))

  const signalledAt = Date.now()
  relay.child.kill('SIGTERM')
  await relay.waitForLog('drain started')

  const ready = await fetch(`${httpUrl}/ready`)
  t.equal(ready.status, 503, '/ready answers 503 while draining')
  t.same(await ready.json(), { status: 'draining', bus: 'memory' })
  const late = connect(wsUrl, '/chat', { token: customerToken(9, 'chat-9') })
  t.equal((await late.closed).code, 1012, 'a socket opened during the drain is closed with 1012')

  const closed = await closes
  t.same(closed.map((entry) => entry.code), clients.map(() => 1012), 'every open socket is closed with 1012')
  const times = closed.map((entry) => entry.at - signalledAt).sort((a, b) => a - b)
  const spread = (times.at(-1) ?? 0) - (times[0] ?? 0)
  t.ok(spread >= DRAIN_WINDOW_MS / 2, `closes are spread over the window (${spread} ms between first and last)`)
  t.ok((times.at(-1) ?? 0) < DRAIN_WINDOW_MS + 1000, `the last close comes within the window (${times.at(-1) ?? 0} ms)`)

  await relay.waitForLog('drain done')
  inFlight.finish()
  t.same(await inFlight.answer, { status: 200, body: '{"ok":true}' }, 'the request in flight when the relay closed is answered')

  const exit = await relay.exited
  t.equal(exit.code, 0, 'the process exits 0')
  t.ok(exit.at - signalledAt < SHUTDOWN_TIMEOUT_MS, `within SHUTDOWN_TIMEOUT_MS (${exit.at - signalledAt} ms)`)

  const logs = relay.lines.map((line) => JSON.parse(line) as Record<string, unknown>)
  const socketCloses = logs.filter((entry) => entry.msg === 'socket closed')
  t.equal(socketCloses.length, clients.length, 'one log line per socket close')
  t.ok(socketCloses.every((entry) => entry.code === 1012 && typeof entry.userId === 'string' && typeof entry.role === 'string' && typeof entry.endpoint === 'string'),
    'each with endpoint, role, user id and close code 1012')
  t.ok(logs.some((entry) => entry.msg === 'shut down'), 'the shutdown completed')
  for (const secret of [API_TOKEN, JWT_SECRET, ...customerJwts, ...operatorJwts, ...consoleJwts, 'in flight']) {
    t.notOk(relay.lines.some((line) => line.includes(secret)), `no log line contains ${secret.slice(0, 14)}…`)
  }
  t.same(relay.stderr, [], 'nothing on stderr')
})

t.test('SIGINT without sockets exits 0 at once', async (t) => {
  const { relay } = await startProcess(t)
  const signalledAt = Date.now()
  relay.child.kill('SIGINT')
  const exit = await relay.exited
  t.equal(exit.code, 0)
  t.ok(exit.at - signalledAt < 2000, `quickly (${exit.at - signalledAt} ms)`)
})

t.test('in process: drain closes in batches per time slice and the bus ends with no subscription', async (t) => {
  const relay = await startRelay(t)
  const clients: TestClient[] = []
  for (let index = 0; index < 30; index++) {
    const chat = `chat-${index % 10}`
    clients.push(await join(relay.wsUrl, '/chat', { token: customerToken(index, chat) }))
  }
  clients.push(await join(relay.wsUrl, '/broadcast', { token: operatorToken(100) }))
  t.teardown(() => closeAll(...clients))
  t.ok(relay.app.sockets.hub.topics().length > 10, 'subscribed while sockets are open')
  const closes = Promise.all(clients.map(closedAt))
  const startedAt = Date.now()
  await relay.app.sockets.drain(600)
  const drainedIn = Date.now() - startedAt
  const closed = await closes
  t.ok(closed.every((entry) => entry.code === 1012), 'all closed with 1012')
  const offsets = closed.map((entry) => entry.at - startedAt)
  const first = Math.min(...offsets)
  const firstBatch = offsets.filter((offset) => offset - first < 50).length
  t.ok(firstBatch <= 12, `a first batch, not everyone at once (${firstBatch} of ${clients.length} within 50 ms of the first close)`)
  t.ok(Math.max(...offsets) - first >= 350, `the batches are spread over the window (${Math.max(...offsets) - first} ms first to last)`)
  t.ok(drainedIn < 600 + 1500, `drain resolves once the sockets are closed (${drainedIn} ms)`)
  t.same(relay.app.sockets.hub.topics(), [], 'every bus subscription was released')
  t.equal(relay.app.sockets.hub.size, 0, 'no socket left')
  const metrics = await relay.app.inject({ method: 'GET', url: '/metrics' })
  t.match(metrics.body, /^relay_draining 1$/m, 'relay_draining is 1')
  t.equal((await relay.app.inject({ method: 'GET', url: '/ready' })).statusCode, 503)
})
