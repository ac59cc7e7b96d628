import { randomUUID } from 'node:crypto'
import type { Test } from 'tap'
import { closeAll, join, type Frame, type TestClient } from './client.js'
import { customerToken, operatorToken } from './relay.js'

/**
 * The routing table of SPEC.md, row by row, with real sockets: who receives an event and who must not.
 * Runs against any cluster: sockets are spread over `socketUrls`, events are posted through `post`
 * (for a cluster, a node that holds none of the receivers).
 */
export interface Cluster {
  socketUrls: string[]
  post: (path: string, body: unknown) => Promise<{ statusCode: number, body: string }>
}

interface Member {
  client: TestClient
  chat?: string
}

let nextId = 1_000
const uniqueId = (): number => ++nextId

export function chatOf (uuid: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { uuid, status: 'new', owner_user: { id: 1, role: 'user' }, operator_user: null, ...extra }
}

export function messageOf (chat: Record<string, unknown>, fields: Record<string, unknown> = {}): Record<string, unknown> {
  const id = uniqueId()
  return {
    id,
    type: 'standard',
    type_role: 'operator',
    status: 'new',
    text: `text ${id}`,
    send_time: '2026-11-23T10:00:00+03:00',
    message_index: id,
    chat,
    user: { id: 2, role: 'operator' },
    attachments: [],
    ...fields
  }
}

export function routingSuite (t: Test, makeCluster: (t: Test) => Promise<Cluster>): void {
  let cluster: Cluster
  let spread = 0
  const members: Member[] = []

  t.before(async () => { cluster = await makeCluster(t) })

  const url = (): string => cluster.socketUrls[spread++ % cluster.socketUrls.length] as string

  async function customer (id: number, chat: string): Promise<TestClient> {
    const client = await join(url(), '/chat', { token: customerToken(id, chat), name: `customer ${id} in ${chat.slice(0, 8)}` })
    members.push({ client, chat })
    return client
  }
  async function operatorInChat (id: number, chat: string): Promise<TestClient> {
    const client = await join(url(), '/chat', { token: operatorToken(id, { chat }), name: `operator ${id} in ${chat.slice(0, 8)}` })
    members.push({ client, chat })
    return client
  }
  async function console_ (id: number, sources?: { widgets?: string[], departments?: Array<string | number> }): Promise<TestClient> {
    const options = sources === undefined ? {} : { sources }
    const client = await join(url(), '/broadcast', { token: operatorToken(id, options), name: `console of operator ${id}` })
    members.push({ client })
    return client
  }

  async function post (path: string, body: unknown): Promise<void> {
    const answer = await cluster.post(path, body)
    if (answer.statusCode !== 200) throw new Error(`POST ${path} answered ${answer.statusCode}: ${answer.body}`)
  }

  /**
   * Event-driven negative check: post a marker every given socket must receive after everything posted
   * before it (per-socket order), wait for it, and only then assert what did not arrive.
   */
  async function barrier (clients: TestClient[]): Promise<void> {
    const marker = randomUUID()
    const chats = new Set<string>()
    let consoles = false
    for (const client of clients) {
      const member = members.find((item) => item.client === client)
      if (member?.chat === undefined) consoles = true
      else chats.add(member.chat)
    }
    if (consoles) await post('/global', { marker })
    for (const chat of chats) await post('/message', { message: messageOf(chatOf(chat), { text: marker }) })
    await Promise.all(clients.map(async (client) =>
      await client.waitFor((frame) => frame.data?.marker === marker || frame.data?.message?.text === marker, 5000, `marker ${marker}`)))
  }

  function none (t: Test, client: TestClient, match: (frame: Frame) => boolean, what: string): void {
    t.equal(client.frames.filter(match).length, 0, `${client.name} must not receive ${what}`)
  }

  const messageWithId = (id: unknown) => (frame: Frame): boolean => frame.data?.message?.id === id

  t.afterEach(() => {
    closeAll(...members.map((member) => member.client))
    members.length = 0
  })

  for (const type of ['standard', 'bot'] as const) {
    t.test(`${type} message reaches the chat room and consoles by sources, and nobody else`, async (t) => {
      const chatA = randomUUID()
      const chatB = randomUUID()
      const customerA = await customer(uniqueId(), chatA)
      const operatorA = await operatorInChat(uniqueId(), chatA)
      const customerB = await customer(uniqueId(), chatB)
      const operatorB = await operatorInChat(uniqueId(), chatB)
      const unfiltered = await console_(uniqueId())
      const sameWidget = await console_(uniqueId(), { widgets: ['lk'] })
      const otherWidget = await console_(uniqueId(), { widgets: ['site'] })

      for (const event of ['message_added', 'message_updated'] as const) {
        const message = messageOf(chatOf(chatA, { widget: { source: 'lk' } }), { type })
        await post('/message', { message, event })
        for (const receiver of [customerA, operatorA, unfiltered, sameWidget]) {
          const frame = await receiver.waitFor((f) => f.type === event && messageWithId(message.id)(f), 3000, `${event} ${String(message.id)}`)
          t.same(frame.data.message, message, `${receiver.name} gets the message unchanged`)
        }
        await barrier([customerB, operatorB, otherWidget])
        for (const outsider of [customerB, operatorB, otherWidget]) none(t, outsider, messageWithId(message.id), `${event} of another chat or widget`)
      }
    })
  }

  // A system message, and then its deletion, reach only the role it names, never a console.
  const systemCases = [
    { title: 'system message reaches only the role it names, and never a console', what: 'a system message', deletes: false, seen: messageWithId },
    { title: 'message_deleted of a system message reaches only the role it named, never a console', what: 'the deletion of a system message', deletes: true, seen: (id: unknown) => (frame: Frame): boolean => frame.type === 'message_deleted' && frame.data?.message?.id === id }
  ]
  for (const { title, what, deletes, seen } of systemCases) {
    t.test(title, async (t) => {
      const chat = randomUUID()
      const customerA = await customer(uniqueId(), chat)
      const operatorA = await operatorInChat(uniqueId(), chat)
      const console1 = await console_(uniqueId())
      const forCustomer = messageOf(chatOf(chat), { type: 'system', type_role: 'user', user: null })
      const forOperator = messageOf(chatOf(chat), { type: 'system', type_role: 'operator', user: null })
      await post('/message', { message: forCustomer })
      await post('/message', { message: forOperator })
      if (deletes) {
        await post('/message', { message: forCustomer, event: 'message_deleted' })
        await post('/message', { message: forOperator, event: 'message_deleted' })
      }
      await customerA.waitFor(seen(forCustomer.id), 3000, `${what} for customers`)
      await operatorA.waitFor(seen(forOperator.id), 3000, `${what} for operators`)
      await barrier([customerA, operatorA, console1])
      none(t, customerA, seen(forOperator.id), `${what} for operators`)
      none(t, operatorA, seen(forCustomer.id), `${what} for customers`)
      none(t, console1, (f) => seen(forCustomer.id)(f) || seen(forOperator.id)(f), what)
    })
  }

  t.test('note reaches operators in the chat and not the customer nor consoles', async (t) => {
    const chat = randomUUID()
    const customerA = await customer(uniqueId(), chat)
    const operatorA = await operatorInChat(uniqueId(), chat)
    const console1 = await console_(uniqueId())
    const note = messageOf(chatOf(chat), { type: 'note' })
    await post('/message', { message: note })
    const frame = await operatorA.waitFor(messageWithId(note.id))
    t.equal(frame.data.message.text, note.text)
    await barrier([customerA, console1])
    none(t, customerA, messageWithId(note.id), 'a note')
    none(t, console1, messageWithId(note.id), 'a note')
  })

  t.test('customer typing reaches operators in the room and consoles by sources, with text', async (t) => {
    const chat = randomUUID()
    await post('/update/chat', chatOf(chat, { widget: { source: 'lk' } }))
    const customerId = uniqueId()
    const typist = await customer(customerId, chat)
    const operatorA = await operatorInChat(uniqueId(), chat)
    const admitted = await console_(uniqueId(), { widgets: ['lk'] })
    const excluded = await console_(uniqueId(), { widgets: ['site'] })
    const otherChat = await operatorInChat(uniqueId(), randomUUID())
    typist.send({ type: 'update_typing', data: { text: 'hello wor', stopped: false } })
    for (const receiver of [operatorA, admitted]) {
      const frame = await receiver.next('typing_updated')
      t.same(frame.data, { chat: { uuid: chat }, user: { id: customerId, role: 'user', firstname: `Customer${customerId}` }, text: 'hello wor', stopped: false })
    }
    await barrier([typist, excluded, otherChat])
    for (const outsider of [typist, excluded, otherChat]) none(t, outsider, (f) => f.type === 'typing_updated', 'the customer typing')
  })

  t.test('operator typing reaches the customer without text and other operators with it, not consoles', async (t) => {
    const chat = randomUUID()
    const customerA = await customer(uniqueId(), chat)
    const typist = await operatorInChat(uniqueId(), chat)
    const colleague = await operatorInChat(uniqueId(), chat)
    const console1 = await console_(uniqueId())
    typist.send({ type: 'update_typing', data: { text: 'secret draft', stopped: false } })
    const toCustomer = await customerA.next('typing_updated')
    t.notOk('text' in toCustomer.data, 'the customer never sees what an operator types')
    t.equal(toCustomer.data.stopped, false)
    const toColleague = await colleague.next('typing_updated')
    t.equal(toColleague.data.text, 'secret draft')
    await barrier([typist, console1])
    none(t, typist, (f) => f.type === 'typing_updated', 'its own typing')
    none(t, console1, (f) => f.type === 'typing_updated', 'operator typing')
  })

  t.test('user_connected and user_disconnected go to the other participants on first and last socket', async (t) => {
    const chat = randomUUID()
    const operatorA = await operatorInChat(uniqueId(), chat)
    const console1 = await console_(uniqueId())
    const customerId = uniqueId()
    const first = await customer(customerId, chat)
    const connected = await operatorA.waitFor((f) => f.type === 'user_connected' && f.data.user.id === customerId)
    t.same(connected.data.chat, { uuid: chat })
    const second = await customer(customerId, chat)
    second.close()
    await second.closed
    first.close()
    const disconnected = await operatorA.waitFor((f) => f.type === 'user_disconnected' && f.data.user.id === customerId)
    t.same(disconnected.data.chat, { uuid: chat })
    await barrier([operatorA, console1])
    t.equal(operatorA.frames.filter((f) => f.type === 'user_connected' && f.data.user.id === customerId).length, 1, 'a second socket of the same user is not announced')
    t.equal(operatorA.frames.filter((f) => f.type === 'user_disconnected' && f.data.user.id === customerId).length, 1, 'closing one of two sockets is not a disconnect')
    none(t, first, (f) => f.type === 'user_connected' && f.data.user.id === customerId, 'its own user_connected')
    none(t, console1, (f) => f.type === 'user_connected' || f.type === 'user_disconnected', 'chat presence')
  })

  t.test('chat_updated reaches consoles whose sources admit the chat, never chat rooms', async (t) => {
    const chat = randomUUID()
    const customerA = await customer(uniqueId(), chat)
    const operatorA = await operatorInChat(uniqueId(), chat)
    const unfiltered = await console_(uniqueId())
    const byWidgetAndDepartment = await console_(uniqueId(), { widgets: ['lk'], departments: [7] })
    const wrongDepartment = await console_(uniqueId(), { widgets: ['lk'], departments: [8] })
    const wrongWidget = await console_(uniqueId(), { widgets: ['site'] })
    const updated = chatOf(chat, { widget: { source: 'lk' }, department: { id: 7 }, status: 'active' })
    await post('/update/chat', updated)
    for (const receiver of [unfiltered, byWidgetAndDepartment]) {
      const frame = await receiver.waitFor((f) => f.type === 'chat_updated' && f.data.chat.uuid === chat)
      t.same(frame.data.chat, updated)
    }
    const bare = chatOf(randomUUID())
    await post('/update/chat', bare)
    await wrongWidget.waitFor((f) => f.type === 'chat_updated' && f.data.chat.uuid === bare.uuid, 3000, 'a chat without widget or department')
    await barrier([customerA, operatorA, wrongDepartment, wrongWidget])
    for (const outsider of [customerA, operatorA, wrongDepartment, wrongWidget]) {
      none(t, outsider, (f) => f.type === 'chat_updated' && f.data.chat.uuid === chat, 'chat_updated outside its sources')
    }
  })

  t.test('operator_updated and global_updated reach every console and no chat room', async (t) => {
    const chat = randomUUID()
    const customerA = await customer(uniqueId(), chat)
    const operatorA = await operatorInChat(uniqueId(), chat)
    const consoles = [await console_(uniqueId()), await console_(uniqueId(), { widgets: ['nowhere'], departments: [0] })]
    const operators = [{ id: 5, role: 'operator', firstname: 'Ann', status: 'online' }]
    await post('/update/operators', operators)
    await post('/global', { unread: 3, nested: { a: [1, 2] } })
    for (const receiver of consoles) {
      t.same((await receiver.next('operator_updated')).data, { operators })
      t.same((await receiver.next('global_updated')).data, { unread: 3, nested: { a: [1, 2] } })
    }
    await barrier([customerA, operatorA])
    for (const outsider of [customerA, operatorA]) {
      none(t, outsider, (f) => f.type === 'operator_updated' || f.type === 'global_updated', 'console-only events')
    }
  })

  t.test('chat_notification reaches only the consoles of the assigned operator', async (t) => {
    const assigned = uniqueId()
    const chat = randomUUID()
    const consoles = [await console_(assigned), await console_(assigned, { widgets: ['other'] })]
    const otherOperator = await console_(uniqueId())
    const assignedInChat = await operatorInChat(assigned, chat)
    const notified = chatOf(chat, { operator_user: { id: assigned, role: 'operator' } })
    await post('/notifications/chat', notified)
    for (const receiver of consoles) t.same((await receiver.next('chat_notification')).data, { chat: notified })
    await barrier([otherOperator, assignedInChat])
    none(t, otherOperator, (f) => f.type === 'chat_notification', "another operator's notification")
    none(t, assignedInChat, (f) => f.type === 'chat_notification', 'a notification on a /chat socket')
  })

  const deletionOf = (id: unknown) => (frame: Frame): boolean => frame.type === 'message_deleted' && frame.data?.message?.id === id
  const deleted = (message: Record<string, unknown>) => ({ message, event: 'message_deleted' })

  for (const type of ['standard', 'bot'] as const) {
    t.test(`message_deleted of a ${type} message reaches the chat room and consoles by sources with only id and chat, and nobody else`, async (t) => {
      const chatA = randomUUID()
      const customerA = await customer(uniqueId(), chatA)
      const operatorA = await operatorInChat(uniqueId(), chatA)
      const customerB = await customer(uniqueId(), randomUUID())
      const unfiltered = await console_(uniqueId())
      const sameWidget = await console_(uniqueId(), { widgets: ['lk'], departments: [7] })
      const otherWidget = await console_(uniqueId(), { widgets: ['site'] })
      const otherDepartment = await console_(uniqueId(), { departments: [8] })
      const message = messageOf(chatOf(chatA, { widget: { source: 'lk' }, department: { id: 7 } }), { type })
      await post('/message', deleted(message))
      for (const receiver of [customerA, operatorA, unfiltered, sameWidget]) {
        const frame = await receiver.waitFor(deletionOf(message.id), 3000, `message_deleted ${String(message.id)}`)
        t.strictSame(frame.data, { message: { id: message.id, chat: { uuid: chatA } } }, `${receiver.name} gets only the id and the chat`)
      }
      await barrier([customerB, otherWidget, otherDepartment])
      for (const outsider of [customerB, otherWidget, otherDepartment]) none(t, outsider, deletionOf(message.id), 'the deletion of another chat or scope')
    })
  }

  t.test('message_deleted of a note reaches operators in the chat, never the customer nor consoles', async (t) => {
    const chat = randomUUID()
    const customerA = await customer(uniqueId(), chat)
    const operatorA = await operatorInChat(uniqueId(), chat)
    const console1 = await console_(uniqueId())
    const note = messageOf(chatOf(chat, { widget: { source: 'lk' } }), { type: 'note' })
    await post('/message', { message: note })
    await post('/message', deleted(note))
    const frame = await operatorA.waitFor(deletionOf(note.id), 3000, 'the deletion of the note')
    t.strictSame(frame.data, { message: { id: note.id, chat: { uuid: chat } } })
    await barrier([customerA, console1])
    for (const outsider of [customerA, console1]) {
      none(t, outsider, deletionOf(note.id), 'the deletion of a note')
      none(t, outsider, messageWithId(note.id), 'the note itself')
    }
  })

  t.test('1,000 messages to one chat arrive complete and in order at every receiver', async (t) => {
    const chat = randomUUID()
    const receivers = [await customer(uniqueId(), chat), await operatorInChat(uniqueId(), chat), await console_(uniqueId())]
    const ids: number[] = []
    for (let index = 0; index < 1000; index++) {
      const message = messageOf(chatOf(chat), { message_index: index })
      ids.push(message.id as number)
      await post('/message', { message })
    }
    const last = ids[ids.length - 1]
    for (const receiver of receivers) {
      await receiver.waitFor(messageWithId(last), 10_000, 'the last message')
      const got = receiver.ofType('message_added').map((f) => f.data.message.id as number).filter((id) => ids.includes(id))
      t.same(got, ids, `${receiver.name} got all 1000 in order`)
    }
  })
}
