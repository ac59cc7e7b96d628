import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { closeAll, join, type Frame, type TestClient } from './helpers/client.js'
import { startCluster } from './helpers/cluster.js'
import { startRedis } from './helpers/redis.js'
import { customerToken, operatorToken, startRelay } from './helpers/relay.js'
import { chatOf, messageOf, type Cluster } from './helpers/routing-suite.js'

/**
 * customer_presence (SPEC `/broadcast`, Routing): a customer's first socket in a chat opened / its last
 * closed reaches the consoles whose sources admit the chat, over all nodes; nobody else, nothing for
 * operators, nothing for a second socket. The same suite runs on one node and on three nodes.
 */
let nextId = 50_000
const uniqueId = (): number => ++nextId

const presenceOf = (id: number, online?: boolean) => (frame: Frame): boolean =>
  frame.type === 'customer_presence' && frame.data.user.id === id && (online === undefined || frame.data.online === online)
const anyCustomerPresence = (frame: Frame): boolean => frame.type === 'customer_presence'

function customerPresenceSuite (t: Test, makeCluster: (t: Test) => Promise<Cluster>): void {
  let cluster: Cluster
  let spread = 0
  const clients: TestClient[] = []
  t.before(async () => { cluster = await makeCluster(t) })
  t.afterEach(() => {
    closeAll(...clients)
    clients.length = 0
  })

  const url = (): string => cluster.socketUrls[spread++ % cluster.socketUrls.length] as string
  async function open (path: '/chat' | '/broadcast', token: string, name: string): Promise<TestClient> {
    const client = await join(url(), path, { token, name })
    clients.push(client)
    return client
  }
  const customer = async (id: number, chat: string): Promise<TestClient> => await open('/chat', customerToken(id, chat), `customer ${id}`)
  const operatorInChat = async (id: number, chat: string): Promise<TestClient> =>
    await open('/chat', operatorToken(id, { chat }), `operator ${id} in the chat`)
  const console_ = async (name: string, sources?: { widgets?: string[], departments?: number[] }): Promise<TestClient> =>
    await open('/broadcast', operatorToken(uniqueId(), sources === undefined ? {} : { sources }), `console ${name}`)

  async function post (path: string, body: unknown): Promise<void> {
    const answer = await cluster.post(path, body)
    if (answer.statusCode !== 200) throw new Error(`POST ${path} answered ${answer.statusCode}: ${answer.body}`)
  }

  /** Everything published before it has reached these sockets (per-socket order): then absence means something. */
  async function barrier (consoles: TestClient[], rooms: Array<[TestClient, string]> = []): Promise<void> {
    const marker = randomUUID()
    await post('/global', { marker })
    for (const [, chat] of rooms) await post('/message', { message: messageOf(chatOf(chat), { text: marker }) })
    await Promise.all([...consoles, ...rooms.map(([client]) => client)].map(async (client) =>
      await client.waitFor((frame) => frame.data?.marker === marker || frame.data?.message?.text === marker, 5000, `marker ${marker}`)))
  }

  function none (t: Test, client: TestClient, match: (frame: Frame) => boolean, what: string): void {
    t.equal(client.frames.filter(match).length, 0, `${client.name} must not receive ${what}`)
  }

  t.test('a customer coming and going reaches consoles whose sources admit the chat, and nobody else', async (t) => {
    const chat = randomUUID()
    await post('/update/chat', chatOf(chat, { widget: { source: 'lk' }, department: { id: 7 } }))
    const unfiltered = await console_('without sources')
    const byWidget = await console_('of widget lk', { widgets: ['lk'] })
    const byDepartment = await console_('of department 7', { departments: [7] })
    const otherWidget = await console_('of widget site', { widgets: ['site'] })
    const otherDepartment = await console_('of widget lk, department 8', { widgets: ['lk'], departments: [8] })
    const operator = await operatorInChat(uniqueId(), chat)
    const id = uniqueId()
    const arriving = await customer(id, chat)
    const admitted = [unfiltered, byWidget, byDepartment]
    for (const receiver of admitted) {
      const frame = await receiver.waitFor(presenceOf(id, true), 3000, 'customer_presence online')
      t.same(frame.data, { chat: { uuid: chat }, user: { id, role: 'user', firstname: `Customer${id}` }, online: true }, `${receiver.name} gets it online`)
    }
    arriving.close()
    await operator.waitFor((frame) => frame.type === 'user_disconnected' && frame.data.user.id === id, 3000, 'user_disconnected (the same decision)')
    for (const receiver of admitted) {
      const frame = await receiver.waitFor(presenceOf(id, false), 3000, 'customer_presence offline')
      t.same(frame.data, { chat: { uuid: chat }, user: { id, role: 'user', firstname: `Customer${id}` }, online: false }, `${receiver.name} gets it offline`)
      t.same(receiver.frames.filter(presenceOf(id)).map((item) => item.data.online), [true, false], `${receiver.name}: online, then offline, once each`)
    }
    await barrier([otherWidget, otherDepartment], [[operator, chat]])
    none(t, otherWidget, anyCustomerPresence, 'customer_presence of another widget')
    none(t, otherDepartment, anyCustomerPresence, 'customer_presence of another department')
    none(t, operator, anyCustomerPresence, 'customer_presence on a /chat socket')
  })

  t.test('a chat whose scope the relay does not know reaches only consoles without sources', async (t) => {
    const chat = randomUUID()
    const unfiltered = await console_('without sources')
    const filtered = await console_('of widget lk', { widgets: ['lk'] })
    const byDepartment = await console_('of department 7', { departments: [7] })
    const id = uniqueId()
    const arriving = await customer(id, chat)
    await unfiltered.waitFor(presenceOf(id, true), 3000, 'customer_presence online of an unknown chat')
    arriving.close()
    await unfiltered.waitFor(presenceOf(id, false), 3000, 'customer_presence offline of an unknown chat')
    await barrier([filtered, byDepartment])
    none(t, filtered, anyCustomerPresence, 'customer_presence of a chat whose widget is unknown')
    none(t, byDepartment, anyCustomerPresence, 'customer_presence of a chat whose department is unknown')
  })

  t.test('operators joining and leaving a chat cause no customer_presence', async (t) => {
    const chat = randomUUID()
    await post('/update/chat', chatOf(chat, { widget: { source: 'lk' } }))
    const unfiltered = await console_('without sources')
    const byWidget = await console_('of widget lk', { widgets: ['lk'] })
    const waiting = await customer(uniqueId(), chat)
    const operatorId = uniqueId()
    const operator = await operatorInChat(operatorId, chat)
    await waiting.waitFor((frame) => frame.type === 'user_connected' && frame.data.user.id === operatorId, 3000, 'the operator announced in the room')
    operator.close()
    await waiting.waitFor((frame) => frame.type === 'user_disconnected' && frame.data.user.id === operatorId, 3000, 'the operator gone from the room')
    await barrier([unfiltered, byWidget])
    for (const receiver of [unfiltered, byWidget]) none(t, receiver, presenceOf(operatorId), 'customer_presence of an operator')
    none(t, waiting, anyCustomerPresence, 'customer_presence on a customer socket')
  })

  t.test("a customer's second socket causes none, and closing one of two causes none", async (t) => {
    const chat = randomUUID()
    await post('/update/chat', chatOf(chat, { widget: { source: 'lk' } }))
    const consoles = [await console_('without sources'), await console_('of widget lk', { widgets: ['lk'] })]
    const id = uniqueId()
    // `open` alternates nodes: on three nodes the two sockets sit on different ones.
    const first = await customer(id, chat)
    for (const receiver of consoles) await receiver.waitFor(presenceOf(id, true), 3000, 'online')
    const second = await customer(id, chat)
    await barrier(consoles)
    for (const receiver of consoles) t.equal(receiver.frames.filter(presenceOf(id, true)).length, 1, `${receiver.name}: a second socket is not announced`)
    first.close()
    await first.closed
    second.close()
    for (const receiver of consoles) await receiver.waitFor(presenceOf(id, false), 3000, 'offline once the last socket closed')
    await barrier(consoles)
    for (const receiver of consoles) {
      t.same(receiver.frames.filter(presenceOf(id)).map((frame) => frame.data.online), [true, false], `${receiver.name}: closing one of two is not offline`)
    }
  })
}

t.test('customer_presence on one node with the embedded bus', async (t) => {
  customerPresenceSuite(t, async (t) => {
    const relay = await startRelay(t)
    return { socketUrls: [relay.wsUrl], post: relay.post }
  })
})

t.test('customer_presence over Redis with three nodes: sockets on nodes 1 and 2, events posted to node 0', async (t) => {
  customerPresenceSuite(t, async (t) => {
    const redis = await startRedis(t)
    const [ingest, ...socketNodes] = await startCluster(t, redis, 3)
    if (ingest === undefined) throw new Error('no ingest node')
    return { socketUrls: socketNodes.map((node) => node.wsUrl), post: ingest.post }
  })
})
