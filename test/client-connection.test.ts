import t from 'tap'
import { connectChat, connectConsole, type ChatOptions, type StateChange } from '../client/src/index.js'
import { Backoff, closeDecision } from '../client/src/policy.js'
import { FakeClock, FakeNetwork, fakeSockets, settle } from './helpers/client-fakes.js'

/** A chat client on fake sockets, a fake clock and a fixed random; every state change recorded. */
async function setup (options: Partial<ChatOptions> = {}, random = 0.5) {
  const clock = new FakeClock()
  const fakes = fakeSockets()
  const states: StateChange[] = []
  let tokens = 0
  const client = connectChat({
    url: 'ws://relay.test', getToken: async () => `token-${++tokens}`, WebSocket: fakes.WebSocket, clock, random: () => random, ...options
  })
  client.on('state', (change) => states.push(change))
  await settle()
  return { client, clock, ...fakes, states, tokens: () => tokens }
}

t.test('backoff is full jitter under min · 2^attempt, capped at max', async (t) => {
  const top = new Backoff(500, 20_000, () => 0.999999)
  t.same(Array.from({ length: 8 }, () => top.next()), [499, 999, 1999, 3999, 7999, 15999, 19999, 19999])
  const bottom = new Backoff(500, 20_000, () => 0)
  t.same([bottom.next(), bottom.next(), bottom.next()], [0, 0, 0], 'the jitter goes down to zero')
  t.equal(top.longest(), 20_000)
  top.reset()
  t.equal(top.next(), 499, 'reset: back to the first ceiling')
})

t.test('the close-code table', async (t) => {
  t.same(closeDecision(4401, 0), { action: 'refresh_token' }, '4401: a fresh token')
  t.same(closeDecision(4401, 1), { action: 'stop' }, 'a second 4401 in a row: give up')
  t.same(closeDecision(4403, 0), { action: 'stop' })
  t.same(closeDecision(1009, 0), { action: 'stop' })
  t.same(closeDecision(4429, 0), { action: 'longest' })
  t.same(closeDecision(1012, 0), { action: 'restart' })
  for (const code of [1006, 1013, 1000, 1011, 4000, undefined]) t.same(closeDecision(code, 0), { action: 'backoff' }, `${code}: backoff`)
})

t.test('reconnects after backoff that doubles per failure and resets after a stable connection', async (t) => {
  const { clock, sockets, last } = await setup()
  t.equal(sockets.length, 1, 'connects at once')
  t.equal(last().url, 'ws://relay.test/chat?token=token-1')
  const delays: number[] = []
  for (let failure = 0; failure < 4; failure++) {
    last().drop(1006)
    const made = sockets.length
    let waited = 0
    while (sockets.length === made) {
      await clock.advance(1)
      waited += 1
    }
    delays.push(waited)
  }
  t.same(delays, [250, 500, 1000, 2000], 'random 0.5 of 500, 1000, 2000, 4000')
  last().welcome()
  await clock.advance(10_000)
  last().drop(1006)
  await clock.advance(249)
  const made = sockets.length
  await clock.advance(1)
  t.equal(sockets.length, made + 1, 'after 10 s connected the backoff starts over')
})

t.test('a connection shorter than stable keeps the backoff growing', async (t) => {
  const { clock, sockets, last } = await setup({ backoff: { minMs: 100, maxMs: 1000, stableMs: 5000 } })
  last().drop(1006)
  await clock.advance(50)
  last().welcome()
  await clock.advance(1000)
  last().drop(1013)
  await clock.advance(99)
  t.equal(sockets.length, 2)
  await clock.advance(1)
  t.equal(sockets.length, 3, 'second failure: random 0.5 of 200')
})

t.test('4401: getToken again and reconnect at once; a second 4401 in a row stops', async (t) => {
  const { clock, sockets, last, states, tokens } = await setup()
  last().welcome()
  last().drop(4401, 'token expired')
  await clock.advance(0)
  t.equal(sockets.length, 2, 'reconnected without waiting')
  t.equal(tokens(), 2, 'with a new token')
  t.equal(last().query.get('token'), 'token-2')
  last().welcome()
  last().drop(4401)
  await clock.advance(0)
  t.equal(sockets.length, 3, 'a 4401 after a connection is again the first')
  last().drop(4401)
  await clock.advance(60_000)
  t.equal(sockets.length, 3, 'never again')
  t.match(states.at(-1), { state: 'disconnected', code: 4401, willReconnect: false })
})

for (const code of [4403, 1009]) {
  t.test(`${code}: stops, no retry`, async (t) => {
    const { client, clock, sockets, last, states } = await setup()
    last().welcome()
    last().drop(code, 'no')
    await clock.advance(120_000)
    t.equal(sockets.length, 1)
    t.equal(client.state, 'disconnected')
    t.same(states.at(-1), { state: 'disconnected', code, reason: 'no', willReconnect: false })
  })
}

t.test('4429 waits the longest backoff; 1012 a short random delay', async (t) => {
  const { clock, sockets, last } = await setup({ backoff: { minMs: 500, maxMs: 8000 } })
  last().drop(4429)
  await clock.advance(7999)
  t.equal(sockets.length, 1)
  await clock.advance(1)
  t.equal(sockets.length, 2, '4429: maxMs')
  last().welcome()
  last().drop(1012, 'server restarting')
  await clock.advance(499)
  t.equal(sockets.length, 2)
  await clock.advance(1)
  t.equal(sockets.length, 3, '1012: random 0.5 of 1 s')
})

t.test('a failing getToken is retried with backoff', async (t) => {
  const clock = new FakeClock()
  const { sockets, WebSocket } = fakeSockets()
  let calls = 0
  const client = connectConsole({ url: 'http://relay.test/base/', getToken: () => { if (++calls === 1) throw new Error('offline'); return 'ok' }, WebSocket, clock, random: () => 0.5 })
  t.teardown(() => client.close())
  await settle()
  t.equal(sockets.length, 0)
  await clock.advance(250)
  t.equal(sockets[0]?.url, 'ws://relay.test/base/broadcast?token=ok', 'http becomes ws, the path is appended')
})

t.test('an idle connection is pinged; any frame answers; silence after a ping reconnects', async (t) => {
  const { clock, sockets, last, states } = await setup()
  last().welcome()
  await clock.advance(20_000)
  last().receive({ type: 'typing_updated', data: { chat: { uuid: 'c1' }, user: { id: 2 }, stopped: true } })
  await clock.advance(24_999)
  t.same(last().sentOfType('ping'), [], 'not idle yet: a frame came 5 s after connecting')
  await clock.advance(1)
  t.same(last().sentOfType('ping'), [{}], 'pinged after 25 s of silence')
  await clock.advance(5000)
  last().receive({ type: 'pong', data: {} })
  await clock.advance(24_999)
  t.equal(last().sentOfType('ping').length, 1)
  await clock.advance(1)
  t.equal(last().sentOfType('ping').length, 2)
  await clock.advance(10_000)
  t.same(sockets[0]?.closedWith, { code: 4000, reason: 'no answer to ping' })
  t.match(states.at(-1), { state: 'disconnected', code: 4000, willReconnect: true })
  await clock.advance(250)
  t.equal(sockets.length, 2, 'reconnects')
})

t.test('no connected frame within connectTimeoutMs: another attempt', async (t) => {
  const { clock, sockets } = await setup({ connectTimeoutMs: 3000 })
  await clock.advance(3000)
  t.equal(sockets[0]?.closedWith?.code, 4000)
  await clock.advance(250)
  t.equal(sockets.length, 2)
})

t.test('offline closes and waits; online reconnects at once', async (t) => {
  const network = new FakeNetwork()
  const { client, clock, sockets, last, states } = await setup({ network })
  last().welcome()
  network.fire('offline')
  t.equal(sockets[0]?.closedWith?.reason, 'offline')
  t.match(states.at(-1), { state: 'disconnected', reason: 'offline', willReconnect: true })
  await clock.advance(120_000)
  t.equal(sockets.length, 1, 'no attempt while offline')
  network.fire('online')
  await settle()
  t.equal(sockets.length, 2, 'online: at once')
  last().welcome()
  t.equal(client.state, 'connected')
  client.close()
  network.fire('offline')
  network.fire('online')
  await settle()
  t.equal(sockets.length, 2, 'closed: the network events are no longer heard')
})

t.test('state events and close()', async (t) => {
  const { client, clock, sockets, last, states } = await setup()
  t.equal(client.state, 'connecting')
  last().welcome()
  client.close()
  await clock.advance(60_000)
  t.same(states.map((change) => change.state), ['connecting', 'connected', 'disconnected'], 'a handler added right after connecting sees it all')
  t.same(sockets[0]?.closedWith, { code: 1000, reason: 'client closed' })
  t.equal(clock.pending(), 0, 'no timer left behind')
})

t.test('an exception in a handler reaches neither the connection nor the other handlers', async (t) => {
  const { client, last } = await setup()
  const seen: number[] = []
  const errors: unknown[] = []
  const original = console.error
  console.error = (error: unknown) => { errors.push(error) }
  t.teardown(() => { console.error = original })
  client.on('message_added', () => { throw new Error('app bug') })
  const off = client.on('message_added', ({ message }) => seen.push(message.id))
  last().welcome({ s: { epoch: 'e1', offset: 0 } })
  last().receive({ type: 'message_added', data: { message: { id: 7, type: 'standard', chat: { uuid: 'c1' } } }, stream: 's', offset: 1 })
  off()
  last().receive({ type: 'message_added', data: { message: { id: 8, type: 'standard', chat: { uuid: 'c1' } } }, stream: 's', offset: 2 })
  t.same(seen, [7], 'the second handler ran, then was removed')
  t.equal(errors.length, 2, 'reported')
  t.equal(client.state, 'connected')
})

t.test('refused options throw at once; a WebSocket constructor that throws is a failed attempt', async (t) => {
  const getToken = (): string => 'tk'
  t.throws(() => connectChat({ url: 'not a url', getToken, WebSocket: fakeSockets().WebSocket }), TypeError)
  if (!('WebSocket' in globalThis)) {
    t.throws(() => connectChat({ url: 'ws://relay.test', getToken }), /pass one as options.WebSocket/, 'Node 20 has no global WebSocket')
  }
  const clock = new FakeClock()
  let attempts = 0
  class Throwing extends fakeSockets().WebSocket {
    constructor (url: string) {
      if (++attempts === 1) throw new SyntaxError('refused')
      super(url)
    }
  }
  const client = connectChat({ url: 'ws://relay.test', getToken, WebSocket: Throwing, clock, random: () => 0.5 })
  t.teardown(() => client.close())
  await settle()
  t.equal(client.state, 'disconnected')
  await clock.advance(250)
  t.equal(attempts, 2, 'tried again after the backoff')
})

t.test('close() right after connecting: no socket is ever made', async (t) => {
  const { sockets, WebSocket } = fakeSockets()
  const client = connectChat({ url: 'ws://relay.test', getToken: () => 'tk', WebSocket })
  const states: string[] = []
  client.on('state', ({ state }) => states.push(state))
  client.close()
  await settle()
  t.equal(sockets.length, 0)
  t.same(states, ['disconnected'])
})
