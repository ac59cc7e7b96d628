import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { createSigner } from 'fast-jwt'
import WebSocket from 'ws'
import { connectChat, connectConsole, type StateChange } from '../client/src/index.js'
import { startCluster } from './helpers/cluster.js'
import { owedTo, postBurst } from './helpers/recovery.js'
import { startRedis } from './helpers/redis.js'
import { customerToken, JWT_SECRET, operatorToken, startRelay, type Relay } from './helpers/relay.js'
import { chatOf } from './helpers/routing-suite.js'
import { closeWhenDone, connected, nextEvent, routedWebSocket, until } from './helpers/sdk.js'

/** Two nodes: on the embedded bus both are the one relay; on Redis, two relays on a private server. */
type Nodes = [first: Relay, second: Relay]

/**
 * History for a whole 200-event burst: a reconnect slowed by a loaded machine can miss more than the
 * default 100 events of a stream, and is then (rightly) told to resync instead of recovered.
 */
const env = { HISTORY_SIZE: '1000', REPLAY_LIMIT: '1000' }

const buses: Array<[string, (t: Test) => Promise<Nodes>]> = [
  ['memory', async (t) => {
    const relay = await startRelay(t, env)
    return [relay, relay]
  }],
  ['redis', async (t) => await startCluster(t, await startRedis(t), 2, env) as Nodes]
]

/** Quick retries: a test waits for reconnects, not for the production backoff. */
const fast = { WebSocket, backoff: { minMs: 50, maxMs: 200 } }

for (const [bus, startNodes] of buses) {
  t.test(`${bus}: a customer and an operator talk both ways through the SDK on two nodes`, async (t) => {
    const [first, second] = await startNodes(t)
    const chat = randomUUID()
    const customer = connectChat({ ...fast, url: first.wsUrl, getToken: () => customerToken(7, chat) })
    const operator = connectChat({ ...fast, url: second.wsUrl, getToken: async () => operatorToken(9, { chat }) })
    const console_ = connectConsole({ ...fast, url: second.wsUrl, getToken: () => operatorToken(9) })
    closeWhenDone(t, customer, operator, console_)
    await Promise.all([connected(customer), connected(operator), connected(console_)])

    const draft = nextEvent(operator, 'typing_updated', (typing) => !typing.stopped)
    const draftOnConsole = nextEvent(console_, 'typing_updated', (typing) => !typing.stopped)
    customer.typing('Hel')
    t.equal((await draft).text, 'Hel', 'the operator sees the customer\'s draft')
    t.equal((await draftOnConsole).text, 'Hel', 'so does the console')

    const atOperator = nextEvent(operator, 'message_added', ({ message }) => message.text === 'Hello')
    const atConsole = nextEvent(console_, 'message_added', ({ message }) => message.text === 'Hello')
    const stopped = nextEvent(operator, 'typing_updated', (typing) => typing.stopped)
    const hello = await customer.sendMessage('Hello')
    t.match(hello, { type: 'standard', text: 'Hello', chat: { uuid: chat }, user: { id: 7 } }, 'resolves with the relay\'s message')
    t.equal((await atOperator).message.id, hello.id)
    t.equal((await atConsole).message.id, hello.id)
    await stopped

    const operatorTyping = nextEvent(customer, 'typing_updated', (typing) => !typing.stopped)
    operator.typing('Looking')
    t.notOk('text' in await operatorTyping, 'the customer sees the operator typing, without text')

    const answer = nextEvent(customer, 'message_added', ({ message }) => message.text === 'How can I help?')
    const sent = await operator.sendMessage('How can I help?')
    t.equal((await answer).message.id, sent.id, 'the customer gets the answer')
    const read = nextEvent(operator, 'message_updated', ({ message }) => message.id === sent.id)
    customer.markRead(sent.id)
    t.equal((await read).message.status, 'read', 'and the operator sees it read')
  })

  for (const who of ['customer', 'console'] as const) {
    t.test(`${bus}: a ${who} whose socket is cut mid-burst reconnects to the other node and gets every owed message once, in order`, async (t) => {
      const nodes = await startNodes(t)
      const chat = randomUUID()
      const routed = routedWebSocket(nodes.map((node) => node.wsUrl))
      const options = { ...fast, url: nodes[0].wsUrl, WebSocket: routed.WebSocket }
      const client = who === 'customer'
        ? connectChat({ ...options, getToken: () => customerToken(7, chat) })
        : connectConsole({ ...options, getToken: () => operatorToken(9) })
      closeWhenDone(t, client)
      const seen: number[] = []
      const outcomes: string[] = []
      client.on('message_added', ({ message }) => seen.push(message.id))
      client.on('recovered', () => outcomes.push('recovered'))
      client.on('resync', () => outcomes.push('resync'))
      await connected(client)

      const burst = postBurst(nodes[1], chatOf(chat), 200, (acked) => {
        if (acked === 60) routed.sockets[0]?.terminate()
      })
      await burst.done
      const owed = burst.acked.filter((id) => owedTo(who, burst.posted.get(id) as Record<string, unknown>))
      await until(client, 'message_added', () => seen.length >= owed.length, 10_000,
        () => `${seen.length} of ${owed.length} owed messages seen`)
      t.same(seen, owed, `all ${owed.length} owed messages, each once, in posting order`)
      t.same(outcomes, ['recovered'], 'the reconnect recovered')
      t.equal(routed.sockets.length, 2, 'one reconnect')
    })
  }

  t.test(`${bus}: a token that expires closes with 4401; the SDK asks getToken again and is connected again`, async (t) => {
    const [first] = await startNodes(t)
    const chat = randomUUID()
    const sign = createSigner({ key: JWT_SECRET, algorithm: 'HS256' })
    let calls = 0
    const client = connectChat({
      ...fast,
      url: first.wsUrl,
      getToken: () => ++calls === 1 ? sign({ sub: '7', role: 'user', chat, exp: Math.floor(Date.now() / 1000) + 1 }) : customerToken(7, chat)
    })
    closeWhenDone(t, client)
    const states: StateChange[] = []
    client.on('state', (change) => states.push(change))
    const recovered = nextEvent(client, 'recovered', () => true, 5000)
    await connected(client)
    await recovered
    t.equal(calls, 2, 'getToken called again')
    t.same(states.map(({ state, code }) => code === undefined ? state : `${state} ${code}`),
      ['connecting', 'connected', 'disconnected 4401', 'connecting', 'connected'])
    t.equal(client.state, 'connected')
  })

  t.test(`${bus}: 4403 stops the SDK: no retry`, async (t) => {
    const [first] = await startNodes(t)
    let calls = 0
    const routed = routedWebSocket([first.wsUrl])
    const client = connectConsole({
      ...fast, url: first.wsUrl, WebSocket: routed.WebSocket, getToken: () => { calls += 1; return customerToken(7, randomUUID()) }
    })
    closeWhenDone(t, client)
    const stopped = await nextEvent(client, 'state', (change) => change.state === 'disconnected')
    t.match(stopped, { code: 4403, willReconnect: false })
    // Longer than the longest backoff (200 ms): a retry would have started.
    await new Promise((resolve) => setTimeout(resolve, 400))
    t.equal(calls, 1, 'getToken called once')
    t.equal(routed.sockets.length, 1, 'no second socket')
    t.equal(client.state, 'disconnected')
  })
}

t.test('a token refused twice in a row (4401, 4401) stops the SDK', async (t) => {
  const relay = await startRelay(t)
  let calls = 0
  const client = connectChat({ ...fast, url: relay.wsUrl, getToken: () => `forged-${++calls}` })
  closeWhenDone(t, client)
  const closes: StateChange[] = []
  client.on('state', (change) => { if (change.state === 'disconnected') closes.push(change) })
  await nextEvent(client, 'state', (change) => change.willReconnect === false)
  t.same(closes.map(({ code, willReconnect }) => [code, willReconnect]), [[4401, true], [4401, false]])
  t.equal(calls, 2)
})

t.test('an idle SDK connection pings and the relay\'s pong keeps it: no reconnect', async (t) => {
  const relay = await startRelay(t)
  const routed = routedWebSocket([relay.wsUrl])
  const client = connectChat({ ...fast, WebSocket: routed.WebSocket, url: relay.wsUrl, getToken: () => customerToken(7, randomUUID()), pingIntervalMs: 100, pongTimeoutMs: 150 })
  closeWhenDone(t, client)
  await connected(client)
  const socket = routed.sockets[0] as WebSocket
  await new Promise<void>((resolve, reject) => {
    let pongs = 0
    const timer = setTimeout(() => reject(new Error(`${pongs} pongs within 3 s`)), 3000)
    socket.on('message', (raw) => {
      if ((JSON.parse(raw.toString()) as { type: string }).type !== 'pong' || ++pongs < 5) return
      clearTimeout(timer)
      resolve()
    })
  })
  t.equal(routed.sockets.length, 1, 'the same socket after five pings')
  t.equal(client.state, 'connected')
})
