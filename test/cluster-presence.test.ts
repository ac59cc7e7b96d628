import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import t from 'tap'
import { roomKey } from '../src/stores/presence-node.js'
import { closeAll, join, type Frame } from './helpers/client.js'
import { eventually, startCluster } from './helpers/cluster.js'
import { startRedis } from './helpers/redis.js'
import { API_TOKEN, customerToken, operatorToken, type Relay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

interface OnlineEntry { user: { id: number }, sources: { widgets: string[], departments: Array<string | number> }, sessions: number }

async function onlineUsers (relay: Relay): Promise<OnlineEntry[]> {
  const answer = await relay.app.inject({ method: 'GET', url: '/online-users', headers: { 'api-token': API_TOKEN } })
  if (answer.statusCode !== 200) throw new Error(`/online-users answered ${answer.statusCode}`)
  return answer.json()
}

const userEvent = (type: string, id: number) => (frame: Frame): boolean => frame.type === type && frame.data.user.id === id

/** Three nodes on one Redis: node 0 takes the HTTP calls and holds no sockets unless a test says so. */
async function cluster (t: Parameters<typeof startCluster>[0]): Promise<[Relay, Relay, Relay, Redis]> {
  const redis = await startRedis(t)
  const [ingest, one, two] = await startCluster(t, redis, 3)
  if (ingest === undefined || one === undefined || two === undefined) throw new Error('no nodes')
  const probe = new Redis(redis.url)
  t.teardown(() => probe.disconnect())
  return [ingest, one, two, probe]
}

t.test('presence is decided over all nodes: a second socket elsewhere is not announced, the last one gone is', async (t) => {
  const [ingest, one, two, probe] = await cluster(t)
  const chat = randomUUID()
  const socketsInPresence = async (): Promise<number> => await probe.scard(roomKey(ingest.config.REDIS_PREFIX, chat, 'user:601'))
  const watcher = await join(one.wsUrl, '/chat', { token: operatorToken(600, { chat }), name: 'operator on node 1' })
  const first = await join(one.wsUrl, '/chat', { token: customerToken(601, chat), name: 'customer, first socket, node 1' })
  await watcher.waitFor(userEvent('user_connected', 601), 3000, 'user_connected')
  const second = await join(two.wsUrl, '/chat', { token: customerToken(601, chat), name: 'customer, second socket, node 2' })
  t.teardown(() => closeAll(watcher, first, second))

  const barrier = async (): Promise<void> => {
    const marker = messageOf(chatOf(chat))
    t.equal((await ingest.post('/message', { message: marker })).statusCode, 200)
    await watcher.waitFor((frame) => frame.data?.message?.id === marker.id, 3000, 'the barrier')
  }
  t.equal(await socketsInPresence(), 2, 'a socket is in presence by the time it is told connected')
  await barrier()
  t.equal(watcher.frames.filter(userEvent('user_connected', 601)).length, 1, 'a second socket on another node is not announced')

  first.close()
  await first.closed
  await eventually(async () => await socketsInPresence() === 1, 3000, 'one socket left in presence')
  await barrier()
  t.equal(watcher.frames.filter(userEvent('user_disconnected', 601)).length, 0, 'closing one of two sockets on two nodes is not a disconnect')

  second.close()
  const gone = await watcher.waitFor(userEvent('user_disconnected', 601), 3000, 'user_disconnected once the last socket anywhere left')
  t.same(gone.data.chat, { uuid: chat })
  t.equal(second.frames.filter(userEvent('user_connected', 601)).length, 0, 'a user is never told about itself')
})

t.test('chat_notification reaches the assigned operator on whichever node its console is, and nobody else', async (t) => {
  const [ingest, one, two] = await cluster(t)
  const assignedOnOne = await join(one.wsUrl, '/broadcast', { token: operatorToken(610) })
  const assignedOnTwo = await join(two.wsUrl, '/broadcast', { token: operatorToken(610, { sources: { widgets: ['other'] } }) })
  const colleague = await join(two.wsUrl, '/broadcast', { token: operatorToken(611) })
  t.teardown(() => closeAll(assignedOnOne, assignedOnTwo, colleague))
  const notified = chatOf(randomUUID(), { operator_user: { id: 610, role: 'operator' } })
  t.equal((await ingest.post('/notifications/chat', notified)).statusCode, 200)
  for (const console of [assignedOnOne, assignedOnTwo]) t.same((await console.next('chat_notification')).data, { chat: notified })
  const marker = randomUUID()
  await ingest.post('/global', { marker })
  await colleague.waitFor((frame) => frame.data?.marker === marker)
  t.equal(colleague.ofType('chat_notification').length, 0, "another operator's console on the same node does not get it")
})

t.test('/online-users answers for every node, from a node that holds no console', async (t) => {
  const [ingest, one, two] = await cluster(t)
  const chat = randomUUID()
  const onOne = await join(one.wsUrl, '/broadcast', { token: operatorToken(620, { sources: { widgets: ['lk'], departments: [1] } }) })
  const onTwo = await join(two.wsUrl, '/broadcast', { token: operatorToken(620, { sources: { widgets: ['site'] } }) })
  const other = await join(two.wsUrl, '/broadcast', { token: operatorToken(621) })
  const inChatOnly = await join(one.wsUrl, '/chat', { token: operatorToken(622, { chat }) })
  t.teardown(() => closeAll(onOne, onTwo, other, inChatOnly))
  await eventually(async () => (await onlineUsers(ingest)).length === 2, 3000, 'two operators online')
  const online = await onlineUsers(ingest)
  const entry = online.find((item) => item.user.id === 620)
  t.equal(entry?.sessions, 2, 'one entry per operator, counting consoles on both nodes')
  t.same(new Set(entry?.sources.widgets), new Set(['lk', 'site']), 'sources merged over its consoles')
  t.ok(online.some((item) => item.user.id === 621), 'the other operator is listed')
  t.notOk(online.some((item) => item.user.id === 622), 'a /chat socket alone does not make an operator online')

  onTwo.close()
  await eventually(async () => (await onlineUsers(ingest)).find((item) => item.user.id === 620)?.sessions === 1, 3000, 'one console left')
  onOne.close()
  await eventually(async () => !(await onlineUsers(ingest)).some((item) => item.user.id === 620), 3000, 'no console left')
  t.ok((await onlineUsers(one)).some((item) => item.user.id === 621), 'the other operator is still online, seen from any node')
})

t.test('standalone mode across nodes: one counter per chat, and a mark on one node finds a message made on another', async (t) => {
  const [, one, two] = await cluster(t)
  const chat = randomUUID()
  const customer = await join(one.wsUrl, '/chat', { token: customerToken(630, chat) })
  const operator = await join(two.wsUrl, '/chat', { token: operatorToken(631, { chat }) })
  t.teardown(() => closeAll(customer, operator))
  customer.send({ type: 'send_message', data: { text: 'from node 1' } })
  const fromOne = (await operator.waitFor((frame) => frame.type === 'message_added' && frame.data.message.text === 'from node 1')).data.message
  operator.send({ type: 'send_message', data: { text: 'from node 2' } })
  const fromTwo = (await customer.waitFor((frame) => frame.type === 'message_added' && frame.data.message.text === 'from node 2')).data.message
  t.ok(fromTwo.id > fromOne.id && fromTwo.message_index > fromOne.message_index, `ids strictly increase across nodes (${fromOne.id as number}, ${fromTwo.id as number})`)

  operator.send({ type: 'mark_message_read', data: { message_id: fromOne.id } })
  const updated = await customer.waitFor((frame) => frame.type === 'message_updated' && frame.data.message.id === fromOne.id)
  t.equal(updated.data.message.status, 'read', 'the mark on node 2 re-emits the message node 1 created')
  t.equal(updated.data.message.text, 'from node 1')

  operator.send({ type: 'mark_message_read', data: { message_id: 987654 } })
  const error = await operator.next('error')
  t.equal(error.data.code, 'message_not_found', 'a message no node created is not found')
})

t.test('a node that shuts down announces its users gone at once', async (t) => {
  const [, one, two] = await cluster(t)
  const chat = randomUUID()
  const watcher = await join(one.wsUrl, '/chat', { token: operatorToken(640, { chat }) })
  const leaving = await join(two.wsUrl, '/chat', { token: customerToken(641, chat) })
  const staying = await join(one.wsUrl, '/chat', { token: customerToken(642, chat) })
  t.teardown(() => closeAll(watcher, leaving, staying))
  await watcher.waitFor(userEvent('user_connected', 641))
  await watcher.waitFor(userEvent('user_connected', 642))
  await two.app.close()
  await watcher.waitFor(userEvent('user_disconnected', 641), 3000, 'user_disconnected of the closed node\'s customer')
  const marker = messageOf(chatOf(chat))
  await one.post('/message', { message: marker })
  await watcher.waitFor((frame) => frame.data?.message?.id === marker.id)
  t.equal(watcher.frames.filter(userEvent('user_disconnected', 641)).length, 1, 'announced once')
  t.equal(watcher.frames.filter(userEvent('user_disconnected', 642)).length, 0, 'a user on a running node is not announced gone')
})
