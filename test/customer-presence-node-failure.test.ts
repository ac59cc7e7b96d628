import { randomUUID } from 'node:crypto'
import t from 'tap'
import { closeAll, join, type Frame } from './helpers/client.js'
import { startSurvivorAndChild } from './helpers/cluster.js'
import { customerToken, operatorToken, type Relay } from './helpers/relay.js'
import { chatOf } from './helpers/routing-suite.js'

/** The contract's bound; the test runs with short heartbeats and expects far less. */
const PRESENCE_BOUND_MS = 30_000

async function customerIds (relay: Relay, chat: string): Promise<number[]> {
  const answer = await relay.post('/customers/online', { chats: [chat] })
  if (answer.statusCode !== 200) throw new Error(`/customers/online answered ${answer.statusCode}: ${answer.body}`)
  const [entry] = JSON.parse(answer.body) as Array<{ users: Array<{ id: number }> }>
  return (entry?.users ?? []).map((user) => user.id).sort((a, b) => a - b)
}

const presenceOf = (id: number, online: boolean) => (frame: Frame): boolean =>
  frame.type === 'customer_presence' && frame.data.user.id === id && frame.data.online === online

t.test("a SIGKILLed node's customers go offline on the surviving consoles and leave /customers/online", async (t) => {
  const { survivor, child: doomed, wsUrl: doomedWs } = await startSurvivorAndChild(t)

  const chat = randomUUID()
  t.equal((await survivor.post('/update/chat', chatOf(chat, { widget: { source: 'lk' } }))).statusCode, 200)
  // The widget console gets the offline only if the sweep announces with the scope the customer's socket recorded.
  const byWidget = await join(survivor.wsUrl, '/broadcast', { token: operatorToken(901, { sources: { widgets: ['lk'] } }), name: 'console of widget lk' })
  const otherWidget = await join(survivor.wsUrl, '/broadcast', { token: operatorToken(902, { sources: { widgets: ['site'] } }), name: 'console of widget site' })
  const stayingSocket = await join(survivor.wsUrl, '/chat', { token: customerToken(912, chat) })
  const doomedSockets = [
    await join(doomedWs, '/chat', { token: customerToken(911, chat) }),
    await join(doomedWs, '/chat', { token: customerToken(912, chat) }),
    await join(doomedWs, '/chat', { token: operatorToken(913, { chat }) })
  ]
  t.teardown(() => closeAll(byWidget, otherWidget, stayingSocket, ...doomedSockets))
  for (const id of [911, 912]) await byWidget.waitFor(presenceOf(id, true), 3000, `customer ${id} online`)
  t.same(await customerIds(survivor, chat), [911, 912], 'both customers listed, one of them only on the doomed node')

  await doomed.kill()
  const killedAt = Date.now()
  const offline = await byWidget.waitFor(presenceOf(911, false), PRESENCE_BOUND_MS, 'customer_presence offline of the killed node\'s customer')
  const took = Date.now() - killedAt
  t.ok(took <= PRESENCE_BOUND_MS, `offline announced ${took} ms after SIGKILL`)
  t.same(offline.data, { chat: { uuid: chat }, user: { id: 911, role: 'user', firstname: 'Customer911' }, online: false }, 'with the profile its token carried')
  t.same(await customerIds(survivor, chat), [912], 'gone from /customers/online; a customer with a socket on the survivor stays')

  // Negative twins, after a barrier every console receives.
  const marker = randomUUID()
  t.equal((await survivor.post('/global', { marker })).statusCode, 200)
  for (const console of [byWidget, otherWidget]) await console.waitFor((frame) => frame.data?.marker === marker, 3000, 'the barrier')
  t.equal(byWidget.frames.filter(presenceOf(911, false)).length, 1, 'announced once')
  t.equal(byWidget.frames.filter(presenceOf(912, false)).length, 0, 'a customer still connected to the survivor is not offline')
  t.equal(byWidget.frames.filter((frame) => frame.type === 'customer_presence' && frame.data.user.id === 913).length, 0, 'an operator is never a customer')
  t.equal(otherWidget.ofType('customer_presence').length, 0, 'a console of another widget hears nothing of it')
})
