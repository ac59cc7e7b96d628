import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { Redis } from 'ioredis'
import { closeAll, join, type TestClient } from './helpers/client.js'
import { startCluster } from './helpers/cluster.js'
import { durableFrames, memoryNodes, messageIds, metric, offsetProblems, owedTo, postBurst, redisNodes, type Nodes } from './helpers/recovery.js'
import { startRedis } from './helpers/redis.js'
import { customerToken, operatorToken, type Relay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

/** Loops per variant; RECOVERY_LOOPS=50 for a long hunt for races. */
const LOOPS = Number(process.env.RECOVERY_LOOPS ?? 3)

/** Kills this node's subscribing connection only (CLIENT KILL ID): the ingest node keeps acknowledging meanwhile. */
async function killSubscriber (probe: Redis, node: Relay): Promise<void> {
  const name = `relay-subscribe-${(node.app.stores.presence as unknown as { nodeId: string }).nodeId}`
  const line = (await probe.client('LIST') as string).split('\n').find((entry) => entry.includes(` name=${name} `))
  const id = /\bid=(\d+)/.exec(line ?? '')?.[1]
  if (id === undefined) throw new Error(`no connection named ${name}`)
  await probe.call('CLIENT', 'KILL', 'ID', id)
}

t.test('redis: a subscriber killed mid-burst (CLIENT KILL ID): open sockets get every acknowledged event in order, repaired', async (t) => {
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
      if (acked === killAt) void killSubscriber(probe, node)
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
