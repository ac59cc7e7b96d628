import { randomUUID } from 'node:crypto'
import { EventEmitter } from 'node:events'
import t from 'tap'
import WebSocket from 'ws'
import { closeAll, connect, join, type TestClient } from './helpers/client.js'
import { FAST_REDIS_ENV, startCluster, waitForBus } from './helpers/cluster.js'
import { startRedis } from './helpers/redis.js'
import { customerToken, operatorToken, startRelay, type Relay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

interface Answer { id: number, status: number, retryAfter: unknown, at: number }

/** Posts messages to one chat back to back, records every answer, and lets a test wait on them. */
class EventFlow extends EventEmitter {
  readonly answers: Answer[] = []
  /** The id of the last message created (posted or about to be): ids only grow. */
  lastId = 0
  #running = true
  readonly done: Promise<void>

  constructor (readonly relay: Relay, readonly chat: Record<string, unknown>) {
    super()
    this.done = this.run()
  }

  private async run (): Promise<void> {
    while (this.#running) {
      const message = messageOf(this.chat)
      this.lastId = message.id as number
      const answer = await this.relay.post('/message', { message })
      const recorded = { id: message.id as number, status: answer.statusCode, retryAfter: answer.headers['retry-after'], at: Date.now() }
      this.answers.push(recorded)
      this.emit('answer', recorded)
      // Refusals come back at once: pace the loop so it does not spin.
      if (answer.statusCode !== 200) await new Promise((resolve) => setTimeout(resolve, 5))
    }
  }

  acked (since = 0): number[] {
    return this.answers.filter((answer) => answer.status === 200 && answer.at >= since).map((answer) => answer.id)
  }

  /** Resolves when `check` holds over the answers so far; fails after `ms`. */
  async until (check: () => boolean, ms: number, what: string): Promise<void> {
    if (check()) return
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('answer', listener)
        reject(new Error(`flow: ${what} not within ${ms} ms`))
      }, ms)
      const listener = (): void => {
        if (!check()) return
        clearTimeout(timer)
        this.off('answer', listener)
        resolve()
      }
      this.on('answer', listener)
    })
  }

  async stop (): Promise<void> {
    this.#running = false
    await this.done
  }
}

const receivedIds = (client: TestClient): Set<number> =>
  new Set(client.ofType('message_added').map((frame) => frame.data.message.id as number))

async function status (relay: Relay, url: string): Promise<number> {
  return (await relay.app.inject({ method: 'GET', url })).statusCode
}

t.test('Redis SIGKILLed while events flow: 503 while down, sockets stay open, then reconnect (1012, new epoch) and are told recovered false; delivery again within 5 s', async (t) => {
  const redis = await startRedis(t)
  const [ingest, other] = await startCluster(t, redis, 2, { DRAIN_WINDOW_MS: '300' })
  if (ingest === undefined || other === undefined) throw new Error('no nodes')
  const chatUuid = randomUUID()
  const remote = await join(other.wsUrl, '/chat', { token: customerToken(401, chatUuid), name: 'customer on the other node' })
  const remoteConsole = await join(other.wsUrl, '/broadcast', { token: operatorToken(403), name: 'console on the other node' })
  const local = await join(ingest.wsUrl, '/chat', { token: operatorToken(402, { chat: chatUuid }), name: 'operator on the ingest node' })
  const receivers = [remote, remoteConsole, local]
  t.teardown(() => closeAll(...receivers))

  const flow = new EventFlow(ingest, chatOf(chatUuid, { widget: { source: 'lk' } }))
  await flow.until(() => flow.acked().length >= 20, 5000, '20 events acknowledged')

  await redis.kill()
  await flow.until(() => flow.answers.some((answer) => answer.status === 503), 3000, 'a 503 after Redis died')
  await flow.until(() => flow.answers.filter((answer) => answer.status === 503).length >= 10, 3000, '10 refusals')
  t.equal(await status(ingest, '/ready'), 503, '/ready is 503 on the ingest node while Redis is down')
  t.equal(await status(other, '/ready'), 503, '/ready is 503 on the other node too')
  for (const client of receivers) t.equal(client.socket.readyState, WebSocket.OPEN, `${client.name} stays open`)
  remote.send({ type: 'send_message', data: { text: 'anyone?', client_message_id: 'c-1' } })
  t.same((await remote.next('message_not_added')).data, { reason: 'unavailable', client_message_id: 'c-1', text: 'anyone?' }, 'send_message: message_not_added, unavailable')
  remote.send({ type: 'update_typing', data: { stopped: false } })
  t.equal((await remote.next('error')).data.code, 'unavailable', 'update_typing: error, unavailable')

  await redis.restart()
  const restartedAt = Date.now()
  // Redis came back empty: the streams have new epochs, so the offsets the clients hold cannot go on.
  const closes = await Promise.all(receivers.map(async (client) => await client.closed))
  t.same(closes.map((close) => close.code), [1012, 1012, 1012], 'every receiver is closed with 1012 to reconnect')
  const again = await Promise.all([
    join(other.wsUrl, '/chat', { token: customerToken(401, chatUuid), query: { since: remote.since() }, name: 'customer again' }),
    join(other.wsUrl, '/broadcast', { token: operatorToken(403), query: { since: remoteConsole.since() }, name: 'console again' }),
    join(ingest.wsUrl, '/chat', { token: operatorToken(402, { chat: chatUuid }), query: { since: local.since() }, name: 'operator again' })
  ])
  t.teardown(() => closeAll(...again))
  t.same(again.map((client) => client.frames[0]?.data.recovered), [false, false, false], 'the lost epoch is not recovered: the clients refetch')
  const createdBefore = flow.lastId
  await again[0]?.waitFor((frame) => frame.type === 'message_added' && frame.data.message.id > createdBefore, 5000, 'an event posted after the restart')
  t.ok(Date.now() - restartedAt <= 5000, `the cluster delivered again ${Date.now() - restartedAt} ms after Redis restarted`)
  await flow.stop()
  const unexpected = flow.answers.filter((answer) => answer.status !== 200 && answer.status !== 503)
  t.same(unexpected, [], 'every answer is 200 or 503')
  t.ok(flow.answers.filter((answer) => answer.status === 503).every((answer) => answer.retryAfter !== undefined), 'every 503 carries Retry-After')
  // Acknowledged after the clients reconnected: every one reaches them.
  const last = messageOf(chatOf(chatUuid, { widget: { source: 'lk' } }))
  t.equal((await ingest.post('/message', { message: last })).statusCode, 200)
  await Promise.all(again.map(async (client) => await client.waitFor((frame) => frame.data?.message?.id === last.id, 5000, 'the last event')))
  t.equal(await status(ingest, '/ready'), 200, '/ready is 200 again')
})

t.test('a Redis that stops answering: a publish is a 503 within the bound, not a hang', async (t) => {
  const redis = await startRedis(t)
  const [ingest] = await startCluster(t, redis, 1, { PUBLISH_TIMEOUT_MS: '500' })
  if (ingest === undefined) throw new Error('no node')
  const chat = chatOf(randomUUID())
  t.equal((await ingest.post('/message', { message: messageOf(chat) })).statusCode, 200, 'answers 200 while Redis answers')
  redis.pause()
  t.teardown(() => redis.resume())
  const started = Date.now()
  const answer = await ingest.post('/message', { message: messageOf(chat) })
  const took = Date.now() - started
  t.equal(answer.statusCode, 503, 'a hung Redis is a 503')
  t.ok(answer.headers['retry-after'] !== undefined, 'with Retry-After')
  t.ok(took < 2000, `answered in ${took} ms (PUBLISH_TIMEOUT_MS 500)`)
  await waitForBus(ingest, 'down', 2000)
  t.equal(await status(ingest, '/ready'), 503, 'the silent connection was dropped: /ready is 503')
  redis.resume()
  await waitForBus(ingest, 'ready')
  t.equal((await ingest.post('/message', { message: messageOf(chat) })).statusCode, 200, '200 again once Redis answers')
})

t.test('Redis down at boot: the relay starts, refuses events with 503, closes sockets with 1012 until it can tell them their positions, and recovers by itself', async (t) => {
  const redis = await startRedis(t)
  await redis.kill()
  const relay = await startRelay(t, { REDIS_URL: redis.url, REDIS_PREFIX: redis.prefix(), ...FAST_REDIS_ENV })
  t.equal(await status(relay, '/health'), 200, 'alive')
  t.equal(await status(relay, '/ready'), 503, '/ready is 503 without Redis')
  const chat = chatOf(randomUUID())
  const refused = await relay.post('/message', { message: messageOf(chat) })
  t.equal(refused.statusCode, 503, 'ingest is 503 without Redis')
  t.equal(refused.headers['retry-after'], '1', 'with Retry-After')
  t.equal(JSON.parse(refused.body).code, 'BUS_UNAVAILABLE')
  t.equal((await relay.app.inject({ method: 'GET', url: '/online-users', headers: { 'api-token': 'test-api-token-primary' } })).statusCode, 503,
    '/online-users cannot answer for the cluster: 503')
  const early = connect(relay.wsUrl, '/chat', { token: customerToken(501, chat.uuid as string) })
  t.equal((await early.closed).code, 1012, 'a socket opened without Redis is closed with 1012 (its streams have no position to tell)')
  t.same(early.frames, [], 'before connected')

  await redis.restart()
  await waitForBus(relay, 'ready', 5000)
  t.equal(await status(relay, '/ready'), 200, '/ready is 200 once Redis is up')
  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(501, chat.uuid as string) })
  t.teardown(() => closeAll(customer))
  const message = messageOf(chat)
  t.equal((await relay.post('/message', { message })).statusCode, 200, 'ingest is 200 once Redis is up')
  await customer.waitFor((frame) => frame.data?.message?.id === message.id, 3000, 'the event, over the topic subscribed after boot')
  t.pass('the client that reconnects once Redis is back receives events')
})

t.test('the embedded bus needs no Redis: ready at once', async (t) => {
  const relay = await startRelay(t)
  t.equal(relay.app.stores.bus.kind, 'memory')
  t.equal(await status(relay, '/ready'), 200)
})
