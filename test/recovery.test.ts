import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import { closeAll, connect, join, type TestClient } from './helpers/client.js'
import { eventually, startCluster } from './helpers/cluster.js'
import { valueOf, parsePrometheus } from './helpers/prometheus.js'
import { durableFrames, messageIds, offsetProblems, owedTo, postBurst } from './helpers/recovery.js'
import { startRedis } from './helpers/redis.js'
import { customerToken, operatorToken, startRelay, type Relay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

/** Loops per variant; RECOVERY_LOOPS=50 for a long hunt for races. */
const LOOPS = Number(process.env.RECOVERY_LOOPS ?? 4)
const BURST = 500

type Nodes = [ingest: Relay, first: Relay, second: Relay]

async function redisNodes (t: Test, env: Record<string, string> = {}): Promise<Nodes> {
  const redis = await startRedis(t)
  const nodes = await startCluster(t, redis, 3, env)
  return nodes as Nodes
}

async function memoryNodes (t: Test, env: Record<string, string> = {}): Promise<Nodes> {
  const relay = await startRelay(t, env)
  return [relay, relay, relay]
}

async function metric (relay: Relay, name: string, labels: Record<string, string> = {}): Promise<number> {
  const response = await relay.app.inject({ method: 'GET', url: '/metrics' })
  return valueOf(parsePrometheus(response.body), name, labels)
}

interface Cut {
  name: string
  env?: Record<string, string>
  /** Cuts the first socket; resolves once it is closed. */
  cut: (client: TestClient, node: Relay) => Promise<void>
  /** The close code the first socket must get (undefined: any, it was terminated by the client). */
  code?: number
  /** Extra message fields (a long text fills a socket that does not read faster than kernel buffers absorb). */
  fields?: Record<string, unknown>
}

const cuts: Cut[] = [
  { name: 'terminated', cut: async (client) => { client.socket.terminate(); await client.closed } },
  {
    name: 'drained (1012)',
    code: 1012,
    cut: async (client, node) => {
      void node.app.sockets.drain(0)
      await client.closed
    }
  },
  {
    name: 'cut as a slow consumer (1013)',
    env: { MAX_BUFFERED_BYTES: '2048', HISTORY_SIZE: '1000', REPLAY_LIMIT: '1000', HISTORY_MAX_BYTES: '536870912' },
    fields: { text: 'x'.repeat(80_000) },
    cut: async (client, node) => {
      // A client that stops reading: the relay's send buffer fills and it cuts the socket (1013). The
      // paused client never reads that close, so the test lets go of it once the relay counted the cut.
      const before = await metric(node, 'relay_slow_consumers_total')
      client.socket.pause()
      await eventually(async () => await metric(node, 'relay_slow_consumers_total') > before, 10_000, 'the slow-consumer cut')
      client.socket.terminate()
      await client.closed
    }
  }
]

for (const [bus, makeNodes] of [['redis', redisNodes], ['memory', memoryNodes]] as const) {
  for (const cut of cuts) {
    for (const who of ['customer', 'console'] as const) {
      // A drained memory node takes no new socket: its reconnect has nowhere to go.
      if (bus === 'memory' && cut.code === 1012) continue
      t.test(`${bus}: a ${who} ${cut.name} mid-burst recovers with since on another node: every owed frame once, in offset order`, async (t) => {
        for (let loop = 0; loop < LOOPS; loop++) await recoverOnce(t, makeNodes, cut, who)
      })
    }
  }
}

async function recoverOnce (t: Test, makeNodes: (t: Test, env?: Record<string, string>) => Promise<Nodes>, cut: Cut, who: 'customer' | 'console'): Promise<void> {
  const [ingest, first, second] = await makeNodes(t, cut.env)
  const chatUuid = randomUUID()
  const chat = chatOf(chatUuid, { widget: { source: 'lk' } })
  const otherChat = chatOf(randomUUID(), { widget: { source: 'elsewhere' } })
  const path = who === 'customer' ? '/chat' : '/broadcast'
  const tokenOf = (): string => who === 'customer' ? customerToken(7001, chatUuid) : operatorToken(7002, { sources: { widgets: ['lk'] } })
  const before = await join(first.wsUrl, path, { token: tokenOf(), name: `${who} before` })
  // A slow consumer is cut once the kernel buffers are full too: early enough for that many bytes to follow.
  const cutAt = 1 + Math.floor(Math.random() * (cut.fields === undefined ? BURST - 2 : 50))
  let cutting: Promise<void> | undefined
  let after: TestClient | undefined
  // What the first socket had received when its since was taken (a paused client may still parse more after).
  let receivedBefore: TestClient['frames'] = []
  let reconnect: (client: TestClient) => void = () => {}
  const reconnected = new Promise<TestClient>((resolve) => { reconnect = resolve })
  const burst = postBurst(ingest, chat, BURST, (acked) => {
    if (acked !== cutAt) return
    cutting = cut.cut(before, first).then(() => {
      receivedBefore = before.frames.slice()
      after = connect(second.wsUrl, path, { token: tokenOf(), query: { since: before.since() }, name: `${who} after` })
      reconnect(after)
    })
  }, cut.fields)
  await burst.done
  // Other widget's traffic: never for this console.
  await ingest.post('/message', { message: messageOf(otherChat) })
  const client = await reconnected
  await cutting
  const owed = burst.acked.filter((id) => owedTo(who, burst.posted.get(id) as Record<string, unknown>))
  const lastOwed = owed[owed.length - 1] as number
  // The last owed message may have reached the first socket already (a cut near the end of the burst).
  await client.next('connected', 10_000)
  if (!messageIds(receivedBefore).includes(lastOwed)) {
    await client.waitFor((frame) => frame.type === 'message_added' && frame.data.message.id === lastOwed, 10_000, `the last owed message (cut at ${cutAt})`)
  }
  const connected = client.frames[0]
  t.equal(connected?.type, 'connected', 'connected is the first frame')
  t.equal(connected?.data.recovered, true, `recovered (cut at ${cutAt})`)
  if (cut.code !== undefined) t.equal((await before.closed).code, cut.code, `the first socket was closed with ${cut.code}`)
  const frames = [...receivedBefore.filter((frame) => frame.offset !== undefined), ...durableFrames(client)]
  t.same(offsetProblems(frames), [], 'offsets strictly increase per stream, over both sockets, with no repeat')
  const received = messageIds(frames)
  t.same(received, owed, `the union is exactly what routing owes the ${who}, in order (${owed.length} frames)`)
  closeAll(before, after as TestClient)
}

t.test('redis: a subscriber killed mid-burst (CLIENT KILL TYPE pubsub): open sockets get every acknowledged event in order, repaired', async (t) => {
  const redis = await startRedis(t)
  // History enough for the gap: a burst posts hundreds of events in the time a subscriber reconnects.
  const [ingest, node] = await startCluster(t, redis, 2, { HISTORY_SIZE: '2000', REPLAY_LIMIT: '2000' }) as [Relay, Relay]
  const probe = new Redis(redis.url)
  t.teardown(() => probe.disconnect())
  for (let loop = 0; loop < LOOPS; loop++) {
    const chatUuid = randomUUID()
    const customer = await join(node.wsUrl, '/chat', { token: customerToken(7101, chatUuid), name: 'customer' })
    const console_ = await join(node.wsUrl, '/broadcast', { token: operatorToken(7102), name: 'console' })
    const repairedBefore = await metric(node, 'relay_stream_repairs_total', { outcome: 'repaired' })
    const killAt = 20 + Math.floor(Math.random() * 200)
    const burst = postBurst(ingest, chatOf(chatUuid), 300, (acked) => {
      if (acked === killAt) void probe.call('CLIENT', 'KILL', 'TYPE', 'pubsub')
    })
    await burst.done
    for (const [client, who] of [[customer, 'customer'], [console_, 'console']] as const) {
      const owed = burst.acked.filter((id) => owedTo(who, burst.posted.get(id) as Record<string, unknown>))
      await client.waitFor((frame) => frame.data?.message?.id === owed[owed.length - 1], 10_000, 'the last owed message')
      t.same(messageIds(durableFrames(client)), owed, `${who}: every acknowledged event, in order, on the same socket`)
      t.same(offsetProblems(durableFrames(client)), [], `${who}: offsets strictly increase`)
      t.equal(client.socket.readyState, client.socket.OPEN, `${who}: never reconnected`)
    }
    t.ok(await metric(node, 'relay_stream_repairs_total', { outcome: 'repaired' }) > repairedBefore, 'the repair metric moved')
    closeAll(customer, console_)
  }
})

t.test('redis: Redis SIGKILLed and restarted empty mid-burst: every acknowledged event, or recovered false on the next connect', async (t) => {
  const redis = await startRedis(t)
  const [ingest, node, other] = await startCluster(t, redis, 3, { DRAIN_WINDOW_MS: '200' }) as Nodes
  const chatUuid = randomUUID()
  const chat = chatOf(chatUuid)
  const customer = await join(node.wsUrl, '/chat', { token: customerToken(7201, chatUuid), name: 'customer' })
  const burst = postBurst(ingest, chat, 200, (acked) => { if (acked === 60) void redis.kill() })
  await burst.done
  await redis.restart()
  // The stream's epoch changed: the node cannot continue the socket's offsets, so it closes it.
  t.equal((await customer.closed).code, 1012, 'the socket is closed with 1012 once the node sees the new epoch')
  const again = await join(other.wsUrl, '/chat', { token: customerToken(7201, chatUuid), query: { since: customer.since() }, name: 'customer again' })
  const owed = burst.acked.filter((id) => owedTo('customer', burst.posted.get(id) as Record<string, unknown>))
  const received = new Set(messageIds(durableFrames(customer, again)))
  const missing = owed.filter((id) => !received.has(id))
  t.ok(missing.length === 0 || again.frames[0]?.data.recovered === false, `no silent gap: ${missing.length} missing, recovered ${String(again.frames[0]?.data.recovered)}`)
  t.equal(again.frames[0]?.data.recovered, false, 'the lost epoch is not recovered')
  const last = messageOf(chat)
  t.equal((await ingest.post('/message', { message: last })).statusCode, 200)
  await again.waitFor((frame) => frame.data?.message?.id === last.id, 5000, 'a live event after the restart')
  closeAll(again)
})

for (const [bus, makeNodes] of [['redis', redisNodes], ['memory', memoryNodes]] as const) {
  t.test(`${bus}: a position that cannot be served is recovered false, nothing replayed, live frames go on`, async (t) => {
    const [ingest, node] = await makeNodes(t, { HISTORY_SIZE: '10', REPLAY_LIMIT: '20' })
    const cases: Array<[string, (since: Record<string, { epoch: string, offset: number }>) => void, number]> = [
      ['history trimmed (30 missed, 10 kept)', () => {}, 30],
      ['REPLAY_LIMIT exceeded', () => {}, 25],
      ['another epoch', (since) => { for (const position of Object.values(since)) position.epoch = 'otherepoch' }, 1]
    ]
    for (const [what, alter, missed] of cases) {
      const chatUuid = randomUUID()
      const chat = chatOf(chatUuid)
      const first = await join(node.wsUrl, '/chat', { token: customerToken(7301, chatUuid), name: 'first' })
      const seen = messageOf(chat)
      await ingest.post('/message', { message: seen })
      await first.waitFor((frame) => frame.data?.message?.id === seen.id)
      first.socket.terminate()
      const since = first.positions()
      alter(since)
      for (let index = 0; index < missed; index++) await ingest.post('/message', { message: messageOf(chat) })
      const again = await join(node.wsUrl, '/chat', { token: customerToken(7301, chatUuid), query: { since: Buffer.from(JSON.stringify(since)).toString('base64url') } })
      t.equal(again.frames[0]?.data.recovered, false, `${what}: recovered false`)
      const live = messageOf(chat)
      await ingest.post('/message', { message: live })
      await again.waitFor((frame) => frame.data?.message?.id === live.id)
      t.same(messageIds(again.frames), [live.id], `${what}: nothing replayed, the live frame follows`)
      closeAll(again)
    }
  })

  t.test(`${bus}: history=N sends the last N frames the socket may see (notes hidden from customers), then live`, async (t) => {
    const [ingest, node] = await makeNodes(t)
    const chatUuid = randomUUID()
    const burst = postBurst(ingest, chatOf(chatUuid), 40)
    await burst.done
    const customer = await join(node.wsUrl, '/chat', { token: customerToken(7401, chatUuid), query: { history: '7' } })
    const operator = await join(node.wsUrl, '/chat', { token: operatorToken(7402, { chat: chatUuid }), query: { history: '7' } })
    for (const [client, who] of [[customer, 'customer'], [operator, 'operator']] as const) {
      const visible = burst.acked.filter((id) => {
        const message = burst.posted.get(id) as Record<string, unknown>
        return who === 'operator' ? message.type !== 'system' || message.type_role === 'operator' : owedTo('customer', message)
      })
      await client.waitFor((frame) => frame.data?.message?.id === visible[visible.length - 1], 3000, 'the history')
      t.same(messageIds(client.frames), visible.slice(-7), `${who}: the last 7 it may see, in order`)
    }
    t.notOk(customer.frames.some((frame) => frame.data?.message?.type === 'note'), 'no note reached the customer')
    const bad = await join(node.wsUrl, '/chat', { token: customerToken(7401, chatUuid), query: { history: '100000' } })
    const error = await bad.next('error')
    t.match(error.data, { code: 'invalid_payload', message: /history/ }, 'a history over HISTORY_SIZE is an error frame, after connected')
    closeAll(customer, operator, bad)
  })
}

for (const [bus, makeNodes] of [['redis', redisNodes], ['memory', memoryNodes]] as const) {
  t.test(`${bus}: customer_presence is durable: numbered in the console's stream and replayed to a console that missed it`, async (t) => {
    const [ingest, node, other] = await makeNodes(t)
    const chatUuid = randomUUID()
    // The chat's scope is known (widget lk): its customer_presence goes to the lk consoles.
    t.equal((await ingest.post('/update/chat', chatOf(chatUuid, { widget: { source: 'lk' } }))).statusCode, 200)
    const console_ = await join(node.wsUrl, '/broadcast', { token: operatorToken(7501, { sources: { widgets: ['lk'] } }), name: 'console' })
    console_.socket.terminate()
    await console_.closed
    const customer = await join(other.wsUrl, '/chat', { token: customerToken(7502, chatUuid), name: 'customer' })
    customer.close()
    await customer.closed
    const again = await join(node.wsUrl, '/broadcast', {
      token: operatorToken(7501, { sources: { widgets: ['lk'] } }), query: { since: console_.since() }, name: 'console again'
    })
    const presence = await again.waitFor((frame) => frame.type === 'customer_presence' && frame.data.online === false, 5000, 'the missed offline')
    t.equal(again.frames[0]?.data.recovered, true, 'recovered')
    const online = again.frames.filter((frame) => frame.type === 'customer_presence')
    t.same(online.map((frame) => frame.data.online), [true, false], 'both missed customer_presence frames replayed, in order')
    t.ok(typeof presence.stream === 'string' && typeof presence.offset === 'number', 'with stream and offset')
    t.same(offsetProblems(durableFrames(again)), [], 'offsets strictly increase')
    closeAll(again)
  })
}

for (const [bus, makeNodes] of [['redis', redisNodes], ['memory', memoryNodes]] as const) {
  t.test(`${bus}: sockets that connect with since or history under traffic miss nothing live, whatever the replay held`, async (t) => {
    const [ingest, node] = await makeNodes(t)
    const chatUuid = randomUUID()
    const chat = chatOf(chatUuid)
    const quiet = await join(node.wsUrl, '/chat', { token: operatorToken(7601, { chat: chatUuid }) })
    const since = quiet.since()
    let posting = true
    const traffic = (async () => {
      while (posting) await ingest.post('/message', { message: messageOf(chat) })
    })()
    const clients: TestClient[] = []
    for (let index = 0; index < 20; index++) {
      const query: Record<string, string> = index % 2 === 0 ? { history: '0' } : { since }
      clients.push(await join(node.wsUrl, '/chat', { token: operatorToken(7602 + index, { chat: chatUuid }), query }))
    }
    posting = false
    await traffic
    const last = messageOf(chat)
    await ingest.post('/message', { message: last })
    for (const client of clients) {
      await client.waitFor((frame) => frame.data?.message?.id === last.id, 5000, 'the last message')
      const start = (Object.values(client.frames[0]?.data.streams ?? {})[0] as { offset: number }).offset
      const offsets = durableFrames(client).map((frame) => frame.offset as number)
      const from = offsets[0] ?? start + 1
      t.same(offsets, Array.from({ length: offsets.length }, (_, at) => from + at), 'offsets contiguous: nothing held was dropped')
      t.ok(from <= start + 1, `from connected's position (${start}) on`)
    }
    closeAll(quiet, ...clients)
  })
}
