import t from 'tap'
import { admits, audienceTopics, baseTopic, laned, laneOf, lanesOf, planDeliveries, sourcesAdmit, type SocketAttributes } from '../src/protocol/routing.js'
import type { Message } from '../src/protocol/protocol.js'

const chatSocket = (role: string, userId: string, chatUuid = 'c1'): SocketAttributes =>
  ({ endpoint: 'chat', role, userId, userKey: `${role}:${userId}`, chatUuid })
const consoleSocket = (userId: string, sources?: SocketAttributes['sources']): SocketAttributes =>
  sources === undefined
    ? { endpoint: 'broadcast', role: 'operator', userId, userKey: `operator:${userId}` }
    : { endpoint: 'broadcast', role: 'operator', userId, userKey: `operator:${userId}`, sources }

const message = (fields: Partial<Message>): Message =>
  ({ id: 1, type: 'standard', chat: { uuid: 'c1', widget: { source: 'lk' } }, ...fields })

const receivers = (deliveries: ReturnType<typeof planDeliveries>, sockets: SocketAttributes[]): SocketAttributes[] =>
  sockets.filter((socket) => deliveries.some((delivery) => admits(delivery.audience, socket)))

const customer = chatSocket('user', '10')
const operator = chatSocket('operator', '20')
const otherChatCustomer = chatSocket('user', '11', 'c2')
const openConsole = consoleSocket('30')
const lkConsole = consoleSocket('31', { widgets: new Set(['lk']) })
const siteConsole = consoleSocket('32', { widgets: new Set(['site']) })
const everyone = [customer, operator, otherChatCustomer, openConsole, lkConsole, siteConsole]

t.test('standard and bot messages: the room and consoles by sources', async (t) => {
  for (const type of ['standard', 'bot'] as const) {
    const got = receivers(planDeliveries({ kind: 'message', event: 'message_added', message: message({ type }) }), everyone)
    t.same(got, [customer, operator, openConsole, lkConsole], type)
  }
})

t.test('system messages reach the role of type_role only; without type_role nobody', async (t) => {
  const plan = (typeRole: string | null) => planDeliveries({ kind: 'message', event: 'message_added', message: message({ type: 'system', type_role: typeRole }) })
  t.same(receivers(plan('user'), everyone), [customer])
  t.same(receivers(plan('operator'), everyone), [operator])
  t.same(receivers(plan(null), everyone), [])
})

t.test('notes reach operators in the room only', async (t) => {
  t.same(receivers(planDeliveries({ kind: 'message', event: 'message_updated', message: message({ type: 'note' }) }), everyone), [operator])
})

t.test('typing: customer text to operators and consoles; operator text hidden from the customer', async (t) => {
  const fromCustomer = planDeliveries({ kind: 'typing', chat: { uuid: 'c1', widget: 'lk' }, user: { id: 10 }, senderRole: 'user', senderKey: 'user:10', text: 'hi', stopped: false })
  t.same(receivers(fromCustomer, everyone), [operator, openConsole, lkConsole])
  for (const delivery of fromCustomer) t.match(delivery.frame.data, { text: 'hi' })
  const colleague = chatSocket('operator', '21')
  const fromOperator = planDeliveries({ kind: 'typing', chat: { uuid: 'c1' }, user: { id: 20 }, senderRole: 'operator', senderKey: 'operator:20', text: 'draft', stopped: false })
  t.same(receivers(fromOperator, [...everyone, colleague]), [customer, colleague])
  const toCustomer = fromOperator.find((delivery) => admits(delivery.audience, customer))
  t.notOk(toCustomer !== undefined && 'text' in toCustomer.frame.data, 'no text for the customer')
})

t.test('presence skips the user itself', async (t) => {
  const plan = planDeliveries({ kind: 'presence', event: 'user_connected', chatUuid: 'c1', user: { id: 10 }, userKey: 'user:10' })
  t.same(receivers(plan, everyone), [operator])
})

t.test('console-only events and notifications', async (t) => {
  t.same(receivers(planDeliveries({ kind: 'global_updated', data: { a: 1 } }), everyone), [openConsole, lkConsole, siteConsole])
  t.same(receivers(planDeliveries({ kind: 'operator_updated', operators: [] }), everyone), [openConsole, lkConsole, siteConsole])
  t.same(receivers(planDeliveries({ kind: 'chat_updated', chat: { uuid: 'c9', widget: { source: 'site' } } }), everyone), [openConsole, siteConsole])
  const notification = planDeliveries({ kind: 'chat_notification', chat: { uuid: 'c1', operator_user: { id: 31 } } })
  t.same(receivers(notification, everyone), [lkConsole], 'integer operator id 31 matches sub "31"')
})

t.test('sources: each present side filters; a missing side filters nothing', async (t) => {
  const both = { widgets: new Set(['lk']), departments: new Set(['7']) }
  t.ok(sourcesAdmit(both, { uuid: 'x', widget: 'lk', department: '7' }))
  t.notOk(sourcesAdmit(both, { uuid: 'x', widget: 'lk', department: '8' }))
  t.notOk(sourcesAdmit(both, { uuid: 'x', widget: 'site', department: '7' }))
  t.ok(sourcesAdmit(both, { uuid: 'x' }), 'a chat without widget or department')
  t.ok(sourcesAdmit(undefined, { uuid: 'x', widget: 'any' }), 'a session without sources sees every chat')
  t.ok(sourcesAdmit({ departments: new Set(['7']) }, { uuid: 'x', widget: 'site', department: '7' }))
})

t.test('topics keep chat rooms and operators apart', async (t) => {
  t.notSame(audienceTopics({ scope: 'chat', chat: 'a' }), audienceTopics({ scope: 'chat', chat: 'b' }))
  t.notSame(audienceTopics({ scope: 'operator', operatorId: '1' }), audienceTopics({ scope: 'operator', operatorId: '2' }))
})

t.test('message_deleted reaches exactly whom the deleted message reached, carrying only its id and chat', async (t) => {
  const colleague = chatSocket('operator', '21')
  const sockets = [...everyone, colleague]
  const cases: Array<Partial<Message>> = [
    { type: 'standard' }, { type: 'bot' }, { type: 'system', type_role: 'user' }, { type: 'system', type_role: 'operator' }, { type: 'note' }
  ]
  for (const fields of cases) {
    const deleted = message({ ...fields, id: 7, text: 'secret', user: { id: 20 } })
    const plan = planDeliveries({ kind: 'message', event: 'message_deleted', message: deleted })
    const added = receivers(planDeliveries({ kind: 'message', event: 'message_added', message: deleted }), sockets)
    t.same(receivers(plan, sockets), added, `${fields.type ?? ''} ${fields.type_role ?? ''}: the same receivers as the message`)
    for (const delivery of plan) t.strictSame(delivery.frame, { type: 'message_deleted', data: { message: { id: 7, chat: { uuid: 'c1' } } } })
  }
  const note = receivers(planDeliveries({ kind: 'message', event: 'message_deleted', message: message({ type: 'note' }) }), sockets)
  t.same(note, [operator, colleague], 'a deleted note: operators in the room, never the customer nor a console')
})

t.test('console lanes: a chat always on one lane of each console topic, a console reading all of them', async (t) => {
  t.same(audienceTopics({ scope: 'sources', chat: { uuid: 'c1', widget: 'w' } }), ['widget:w', 'any-widget'], 'one lane: the plain names')
  const lane = laneOf('c1', 4)
  t.same(audienceTopics({ scope: 'sources', chat: { uuid: 'c1', widget: 'w' } }, 4), [`widget:w/${lane}`, `any-widget/${lane}`], 'both lanes of the chat')
  t.same(audienceTopics({ scope: 'sources', chat: { uuid: 'c1' } }, 4), [`consoles/${lane}`], 'a chat without a widget on its consoles lane')
  t.same(audienceTopics({ scope: 'broadcast' }, 4), ['consoles/0'], 'operator and global updates on lane 0')
  t.same(audienceTopics({ scope: 'operator', operatorId: '7' }, 4), ['operator:7'], 'an operator\'s topic has no lanes')
  const spread = new Set(Array.from({ length: 400 }, (_, index) => laneOf(`chat-${index}`, 4)))
  t.same([...spread].sort(), [0, 1, 2, 3], 'chats spread over every lane')
  t.equal(laneOf('c1', 4), lane, 'the same chat, the same lane')
  t.same(lanesOf('any-widget', 3), ['any-widget/0', 'any-widget/1', 'any-widget/2'])
  t.equal(baseTopic(laned('widget:a/b', 2, 3), 3), 'widget:a/b', 'a widget name with a slash keeps it')
  t.equal(baseTopic('widget:a/b', 1), 'widget:a/b', 'without lanes nothing is cut')
  t.equal(baseTopic('chat:x/1', 3), 'chat:x/1', 'chat topics have no lanes')
})
