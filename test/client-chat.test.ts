import t from 'tap'
import { connectChat, encodeSince, SendError, type ChatOptions } from '../client/src/index.js'
import { durable, FakeClock, fakeSockets, settle } from './helpers/client-fakes.js'

async function setup (options: Partial<ChatOptions> = {}) {
  const clock = new FakeClock()
  const fakes = fakeSockets()
  const client = connectChat({ url: 'ws://relay.test', getToken: () => 'tk', WebSocket: fakes.WebSocket, clock, random: () => 0.5, ...options })
  const seen: number[] = []
  const events: string[] = []
  client.on('message_added', ({ message }) => seen.push(message.id))
  client.on('recovered', () => events.push('recovered'))
  client.on('resync', () => events.push('resync'))
  await settle()
  return { client, clock, ...fakes, seen, events }
}

function sinceOf (url: string): unknown {
  const since = new URL(url).searchParams.get('since')
  return since === null ? undefined : JSON.parse(Buffer.from(since, 'base64url').toString('utf8'))
}

t.test('duplicates and older offsets are dropped per stream; a gap is not waited for', async (t) => {
  const { last, seen } = await setup()
  last().welcome({ s: { epoch: 'e1', offset: 5 }, other: { epoch: 'e1', offset: 0 } })
  for (const offset of [6, 7, 7, 6, 5, 10, 9, 11]) last().receive(durable(offset))
  last().receive(durable(1, 101, 'other'))
  last().receive(durable(1, 101, 'other'))
  last().receive({ type: 'message_added', data: { message: { id: 500, type: 'standard', chat: { uuid: 'c1' } } } })
  t.same(seen, [6, 7, 10, 11, 101, 500], 'each offset once, never backwards; a frame without offset passes')
})

t.test('reconnects with since; a recovered replay older than connected\'s top is delivered, once', async (t) => {
  const { last, clock, seen, events } = await setup()
  t.equal(last().query.get('since'), null, 'nothing to recover on the first connect')
  last().welcome({ s: { epoch: 'e1', offset: 3 } })
  last().receive(durable(4))
  last().receive(durable(5))
  last().drop(1006)
  await clock.advance(250)
  t.same(sinceOf(last().url), { s: { epoch: 'e1', offset: 5 } }, 'since: the last offset received')
  last().welcome({ s: { epoch: 'e1', offset: 8 }, added: { epoch: 'e1', offset: 2 } }, { recovered: true })
  for (const offset of [5, 6, 7, 8, 9]) last().receive(durable(offset))
  last().receive(durable(2, 200, 'added'))
  last().receive(durable(3, 300, 'added'))
  t.same(events, ['recovered'])
  t.same(seen, [4, 5, 6, 7, 8, 9, 300], 'the replay (6-8) and live frames; 5 again and a new stream\'s top dropped')
  last().drop(1012)
  await clock.advance(500)
  t.same(sinceOf(last().url), { s: { epoch: 'e1', offset: 9 }, added: { epoch: 'e1', offset: 3 } })
})

t.test('recovered false: resync, and positions start over at connected\'s', async (t) => {
  const { last, clock, seen, events } = await setup()
  last().welcome({ s: { epoch: 'e1', offset: 3 } })
  last().receive(durable(4))
  last().drop(1006)
  await clock.advance(250)
  last().welcome({ s: { epoch: 'e2', offset: 1 } }, { recovered: false })
  last().receive(durable(2, 20))
  last().receive(durable(1, 10))
  t.same(events, ['resync'])
  t.same(seen, [4, 20], 'the new epoch counts from its own top')
  last().drop(1006)
  await clock.advance(500)
  t.same(sinceOf(last().url), { s: { epoch: 'e2', offset: 2 } })
})

t.test('history on the first connect only; its frames, older than the top, are delivered', async (t) => {
  const { last, clock, seen, events } = await setup({ history: 20 })
  t.equal(last().query.get('history'), '20')
  last().drop(1006)
  await clock.advance(250)
  t.equal(last().query.get('history'), '20', 'still the first connect')
  last().welcome({ s: { epoch: 'e1', offset: 9 } })
  for (const offset of [3, 7, 9, 9, 10]) last().receive(durable(offset))
  t.same(seen, [3, 7, 9, 10])
  last().drop(1006)
  await clock.advance(500)
  t.equal(last().query.get('history'), null, 'a reconnect recovers instead')
  t.same(sinceOf(last().url), { s: { epoch: 'e1', offset: 10 } })
  t.same(events, [])
})

t.test('encodeSince is base64url of UTF-8 JSON, without padding', async (t) => {
  const positions = { 'chat:ü-€-😀': { epoch: 'abc', offset: 12 } }
  t.equal(encodeSince(positions), Buffer.from(JSON.stringify(positions)).toString('base64url'))
})

t.test('sendMessage resolves on the message_added with its client_message_id', async (t) => {
  const { client, last } = await setup()
  last().welcome()
  const sent = client.sendMessage('hello', { attachments: ['a1'] })
  const [frame] = last().sentOfType('send_message')
  t.match(frame, { text: 'hello', attachments: ['a1'], client_message_id: /^[0-9a-z]+-1$/ })
  last().receive({ type: 'message_added', data: { message: { id: 1, type: 'standard', chat: { uuid: 'c1' }, client_message_id: 'other' } } })
  last().receive({ type: 'message_added', data: { message: { id: 2, type: 'standard', text: 'hello', chat: { uuid: 'c1' }, client_message_id: frame?.client_message_id } } })
  t.match(await sent, { id: 2, text: 'hello' })
})

t.test('sendMessage rejects on message_not_added, on timeout, and on close', async (t) => {
  const { client, last, clock } = await setup()
  last().welcome()
  const refused = client.sendMessage('x', { clientMessageId: 'm1' })
  last().receive({ type: 'message_not_added', data: { reason: 'webhook_failed', client_message_id: 'm1', text: 'x' } })
  await t.rejects(refused, new SendError('webhook_failed', 'm1'))
  const slow = client.sendMessage('y', { clientMessageId: 'm2', timeoutMs: 1000 })
  await clock.advance(999)
  let settled = false
  void slow.catch(() => { settled = true })
  await settle()
  t.notOk(settled, 'not before timeoutMs')
  await clock.advance(1)
  await t.rejects(slow, { name: 'SendError', reason: 'timeout', clientMessageId: 'm2' })
  const cut = client.sendMessage('z', { clientMessageId: 'm3' })
  client.close()
  await t.rejects(cut, { name: 'SendError', reason: 'closed' })
  await t.rejects(client.sendMessage('after'), { name: 'SendError', reason: 'closed' })
})

t.test('sends wait for the connection; one timed out before it is never sent', async (t) => {
  const { client, last, clock } = await setup()
  const early = client.sendMessage('early', { clientMessageId: 'e' })
  const late = client.sendMessage('gone', { clientMessageId: 'g', timeoutMs: 100 })
  client.markRead(5)
  client.typing('drop me')
  const timedOut = t.rejects(late, { name: 'SendError', reason: 'timeout' })
  await clock.advance(100)
  await timedOut
  last().welcome()
  t.same(last().sent.map((frame) => frame.type), ['send_message', 'mark_message_read'], 'typing is not queued')
  t.equal(last().sent[0]?.data.client_message_id, 'e')
  last().receive({ type: 'message_added', data: { message: { id: 9, type: 'standard', chat: { uuid: 'c1' }, client_message_id: 'e' } } })
  t.match(await early, { id: 9 })
})

t.test('typing: first keystroke at once, then at most one per 2 s with the latest draft; stopped after 3 s idle', async (t) => {
  const { client, last, clock } = await setup()
  last().welcome()
  const typing = (): Array<Record<string, unknown>> => last().sentOfType('update_typing')
  client.typing('h')
  t.same(typing(), [{ text: 'h', stopped: false }])
  for (const draft of ['he', 'hel', 'hell']) {
    await clock.advance(400)
    client.typing(draft)
  }
  t.equal(typing().length, 1, 'nothing more within 2 s')
  await clock.advance(800)
  t.same(typing().at(-1), { text: 'hell', stopped: false }, 'the latest draft at 2 s')
  await clock.advance(2199)
  t.equal(typing().length, 2)
  await clock.advance(1)
  t.same(typing().at(-1), { stopped: true }, 'idle 3 s after the last keystroke')
  await clock.advance(10_000)
  t.equal(typing().length, 3, 'stopped once')
})

t.test('typing: sending the message stops it first; an empty draft stops it', async (t) => {
  const { client, last, clock } = await setup()
  last().welcome()
  client.typing('hi')
  void client.sendMessage('hi').catch(() => {})
  t.same(last().sent.map((frame) => [frame.type, frame.data.stopped]), [['update_typing', false], ['update_typing', true], ['send_message', undefined]])
  await clock.advance(2000)
  client.typing('again')
  client.typing('')
  t.same(last().sentOfType('update_typing').slice(2), [{ text: 'again', stopped: false }, { stopped: true }])
  await clock.advance(10_000)
  t.equal(last().sentOfType('update_typing').length, 4, 'no trailing frame after a stop')
  client.close()
})
