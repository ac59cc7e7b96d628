import { randomUUID } from 'node:crypto'
import t from 'tap'
import { closeAll, join, type Frame } from './helpers/client.js'
import { eventually, startSurvivorAndChild } from './helpers/cluster.js'
import { API_TOKEN, customerToken, operatorToken, testConfig, type Relay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

/** The contract's bound; the test runs with short heartbeats and expects far less. */
const PRESENCE_BOUND_MS = 30_000

interface OnlineEntry { user: { id: number }, sessions: number }

async function onlineUsers (relay: Relay): Promise<OnlineEntry[]> {
  const answer = await relay.app.inject({ method: 'GET', url: '/online-users', headers: { 'api-token': API_TOKEN } })
  if (answer.statusCode !== 200) throw new Error(`/online-users answered ${answer.statusCode}`)
  return answer.json()
}

const sessionsOf = (entries: OnlineEntry[], id: number): number => entries.find((entry) => entry.user.id === id)?.sessions ?? 0

t.test('a SIGKILLed node leaves presence: its operators leave /online-users and its users are announced gone', async (t) => {
  const { survivor, child: doomed, wsUrl: doomedWs } = await startSurvivorAndChild(t)

  const chat = randomUUID()
  const watcher = await join(survivor.wsUrl, '/chat', { token: operatorToken(200, { chat }), name: 'operator 200 on the survivor' })
  const survivingConsole = await join(survivor.wsUrl, '/broadcast', { token: operatorToken(201) })
  const stayingCustomer = await join(survivor.wsUrl, '/chat', { token: customerToken(303, chat) })
  const doomedSockets = [
    await join(doomedWs, '/chat', { token: customerToken(301, chat) }),
    await join(doomedWs, '/chat', { token: customerToken(303, chat) }),
    await join(doomedWs, '/broadcast', { token: operatorToken(201) }),
    await join(doomedWs, '/broadcast', { token: operatorToken(302) })
  ]
  t.teardown(() => closeAll(watcher, survivingConsole, stayingCustomer, ...doomedSockets))
  const connected = (id: number) => (frame: Frame): boolean => frame.type === 'user_connected' && frame.data.user.id === id
  await watcher.waitFor(connected(301), 3000, 'user_connected of the customer on the doomed node')
  await eventually(async () => {
    const online = await onlineUsers(survivor)
    return sessionsOf(online, 302) === 1 && sessionsOf(online, 201) === 2
  }, 3000, 'both nodes\' consoles in /online-users')

  await doomed.kill()
  const killedAt = Date.now()
  const gone = await eventually(async () => sessionsOf(await onlineUsers(survivor), 302) === 0, PRESENCE_BOUND_MS, 'operator 302 leaves /online-users')
  t.ok(gone <= PRESENCE_BOUND_MS, `the doomed node's operator left /online-users ${gone} ms after SIGKILL`)
  t.equal(sessionsOf(await onlineUsers(survivor), 201), 1, 'an operator with a console on a surviving node stays, with one session')

  const departed = await watcher.waitFor((frame) => frame.type === 'user_disconnected' && frame.data.user.id === 301,
    Math.max(1000, PRESENCE_BOUND_MS - (Date.now() - killedAt)), 'user_disconnected of the killed node\'s customer')
  t.same(departed.data.chat, { uuid: chat })
  t.equal(departed.data.user.firstname, 'Customer301', 'announced with the profile its token carried')

  // Negative twin: a user with a socket left on the survivor is not announced gone.
  const marker = messageOf(chatOf(chat), { text: randomUUID() })
  t.equal((await survivor.post('/message', { message: marker })).statusCode, 200)
  await watcher.waitFor((frame) => frame.data?.message?.id === marker.id)
  t.equal(watcher.frames.filter((frame) => frame.type === 'user_disconnected' && frame.data.user.id === 303).length, 0,
    'a customer still connected to the survivor is not announced gone')
  t.equal(watcher.frames.filter((frame) => frame.type === 'user_disconnected' && frame.data.user.id === 301).length, 1, 'announced once')
  t.equal(stayingCustomer.frames.filter((frame) => frame.type === 'user_disconnected' && frame.data.user.id === 303).length, 0,
    'nobody is told about themselves')
})

t.test('the default heartbeat and TTL sweep a dead node within the 30 s bound', async (t) => {
  const config = testConfig()
  // Worst case: the node dies right after a heartbeat; its key lives PRESENCE_TTL_MS, then the next sweep.
  t.ok(config.PRESENCE_TTL_MS + config.PRESENCE_HEARTBEAT_MS <= PRESENCE_BOUND_MS,
    `TTL ${config.PRESENCE_TTL_MS} ms + heartbeat ${config.PRESENCE_HEARTBEAT_MS} ms`)
  t.throws(() => testConfig({ PRESENCE_HEARTBEAT_MS: '5000', PRESENCE_TTL_MS: '5000' }), /PRESENCE_TTL_MS must be longer/,
    'a TTL that a live node could outlast between heartbeats is refused')
})
