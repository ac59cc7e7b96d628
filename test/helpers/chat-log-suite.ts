import type { Test } from 'tap'
import type { ChatLog } from '../../src/stores/chat-log.js'
import type { Chat, Message } from '../../src/protocol/protocol.js'

// The store-independent chat log suite: test/chat-log.test.ts runs it on memory and one Redis,
// test/chat-log-cluster.test.ts on a Redis Cluster.

export interface Bounds {
  messagesPerChat?: number
  maxBytes?: number
  typingPerSecond?: number
}

/** One chat log under test, with what the suite needs to see inside it. */
export interface Subject {
  log: ChatLog
  /** The byte total the log itself keeps. */
  bytes: () => Promise<number>
  /** Resolves once a new typing window has begun. */
  nextTypingWindow: () => Promise<void>
}

export type MakeSubject = (t: Test, bounds: Bounds) => Promise<Subject>

/** A standard message whose JSON is exactly `size` UTF-8 bytes (`fill` is 1 to 4 bytes a character). */
export function sized (chatUuid: string, id: number, size: number, fill = 'x'): Message {
  const message: Message = { id, type: 'standard', chat: { uuid: chatUuid }, text: '' }
  const room = size - Buffer.byteLength(JSON.stringify(message))
  const fillBytes = Buffer.byteLength(fill)
  message.text = fill.repeat(Math.floor(room / fillBytes)) + 'x'.repeat(room % fillBytes)
  if (Buffer.byteLength(JSON.stringify(message)) !== size) throw new Error(`cannot size message ${id} to ${size} bytes`)
  return message
}

/** Which of `ids` the log still finds in the chat. */
export async function kept (log: ChatLog, chatUuid: string, ids: number[]): Promise<number[]> {
  const found: number[] = []
  for (const id of ids) if (await log.find(chatUuid, id) !== undefined) found.push(id)
  return found
}

/** The bytes of every message the log still finds, probed one by one. */
async function foundBytes (log: ChatLog, written: Map<string, Set<number>>): Promise<number> {
  let total = 0
  for (const [chatUuid, ids] of written) {
    for (const id of ids) {
      const message = await log.find(chatUuid, id)
      if (message !== undefined) total += Buffer.byteLength(JSON.stringify(message))
    }
  }
  return total
}

export const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, index) => from + index)
export const chat = (uuid: string, fields: Partial<Chat> = {}): Chat => ({ uuid, ...fields })

export function chatLogSuite (t: Test, name: string, make: MakeSubject): void {
  t.test(`${name}: a chat keeps its messagesPerChat highest ids; a lower id over the bound goes at once`, async (t) => {
    const { log } = await make(t, { messagesPerChat: 3 })
    await log.remember(sized('b', 1, 100))
    for (const id of range(1, 5)) await log.remember(sized('a', id, 100))
    t.same(await kept(log, 'a', range(1, 5)), [3, 4, 5], 'the two lowest ids went')
    await log.remember(sized('a', 2, 100))
    t.same(await kept(log, 'a', range(1, 5)), [3, 4, 5], 'an id below every kept one is not kept, and evicts none of them')
    await log.remember(sized('a', 10, 100))
    t.same(await kept(log, 'a', [3, 4, 5, 10]), [4, 5, 10])
    t.same(await kept(log, 'b', [1]), [1], 'the other chat lost nothing')
  })

  t.test(`${name}: a burst in one chat within its bound evicts no other chat's messages while the budget holds both`, async (t) => {
    const { log, bytes } = await make(t, { messagesPerChat: 50, maxBytes: 60 * 200 })
    for (const id of range(1, 10)) await log.remember(sized('victim', id, 200))
    for (const id of range(1, 500)) await log.remember(sized('burst', id, 200))
    t.same(await kept(log, 'victim', range(1, 10)), range(1, 10), 'every message of the quiet chat is still there')
    t.same(await kept(log, 'burst', range(1, 500)), range(451, 500), 'the burst keeps its own newest 50')
    t.equal(await bytes(), 60 * 200)
    const found = await log.find('victim', 1)
    t.equal(found?.id, 1, 'a mark on the quiet chat still finds its message')
  })

  t.test(`${name}: over the byte budget the least recently written chat loses its lowest ids first, and the total never passes the budget`, async (t) => {
    const budget = 1000
    const { log, bytes } = await make(t, { messagesPerChat: 10, maxBytes: budget })
    const written = new Map<string, Set<number>>()
    const write = async (chatUuid: string, id: number, size = 100): Promise<void> => {
      await log.remember(sized(chatUuid, id, size))
      written.set(chatUuid, (written.get(chatUuid) ?? new Set()).add(id))
      const total = await bytes()
      t.ok(total <= budget, `after ${chatUuid}:${id} the total ${total} is within ${budget}`)
      t.equal(total, await foundBytes(log, written), `after ${chatUuid}:${id} the total is the bytes of what is kept`)
    }
    for (const chatUuid of ['c1', 'c2', 'c3']) for (const id of [1, 2, 3]) await write(chatUuid, id)
    await write('c1', 4)
    t.same(await kept(log, 'c2', [1, 2, 3]), [1, 2, 3], 'at exactly the budget nothing goes')
    for (const id of [1, 2, 3, 4]) await write('c4', id)
    t.same(await kept(log, 'c2', [1, 2, 3]), [], 'c2, the least recently written, went first, lowest ids first')
    t.same(await kept(log, 'c3', [1, 2, 3]), [2, 3], 'then c3 lost its lowest id')
    t.same(await kept(log, 'c1', [1, 2, 3, 4]), [1, 2, 3, 4], 'c1, written after c3, kept everything')
    t.same(await kept(log, 'c4', [1, 2, 3, 4]), [1, 2, 3, 4])
    await write('c1', 1, 300)
    t.same(await kept(log, 'c3', [2, 3]), [], 'a replacement that grows over the budget evicts the least recently written chat')
    t.same(await kept(log, 'c4', [1, 2, 3, 4]), [1, 2, 3, 4], 'and only as much as it must')
    t.equal(Buffer.byteLength(JSON.stringify(await log.find('c1', 1))), 300, 'the replacement is what is kept')
  })

  t.test(`${name}: replacing a message keeps the byte count exact over 1,000 replacements of multi-byte text`, async (t) => {
    const { log, bytes } = await make(t, {})
    const latest = new Map<number, Message>()
    const write = async (message: Message): Promise<void> => {
      await log.remember(message)
      latest.set(message.id, message)
    }
    for (const id of [1, 2, 3]) await write(sized('a', id, 120))
    const fills = ['a', 'é', '€', '😀']
    for (let round = 0; round < 1000; round++) {
      await write(sized('a', 1 + round % 3, 80 + (round * 7919) % 900, fills[round % fills.length]))
    }
    const expected = [...latest.values()].reduce((sum, message) => sum + Buffer.byteLength(JSON.stringify(message)), 0)
    t.equal(await bytes(), expected, 'the total is the bytes of the three current versions')
    t.same(await log.find('a', 2), latest.get(2), 'find answers the last version')
  })

  t.test(`${name}: forget drops a deleted message and its bytes; what is not there frees nothing`, async (t) => {
    const { log, bytes } = await make(t, { messagesPerChat: 10 })
    for (const id of [1, 2, 3]) await log.remember(sized('a', id, 100))
    await log.remember(sized('b', 1, 150))
    await log.forget('a', 2)
    t.same(await kept(log, 'a', [1, 2, 3]), [1, 3], 'the forgotten id is found no more')
    t.equal(await bytes(), 350, 'its bytes left the budget')
    await log.forget('a', 2)
    await log.forget('a', 9)
    await log.forget('nowhere', 1)
    await log.forget('b', 2)
    t.equal(await bytes(), 350, 'forgetting an unknown id or chat, or twice, changes nothing')
    t.same(await kept(log, 'b', [1]), [1], 'nor another chat')
    await log.forget('a', 1)
    await log.forget('a', 3)
    t.equal(await bytes(), 150, 'a chat forgotten message by message leaves the budget whole')
    await log.remember(sized('a', 4, 100))
    t.same(await kept(log, 'a', [1, 3, 4]), [4], 'and is remembered again from nothing')
    t.equal(await bytes(), 250)
  })

  t.test(`${name}: a chat's scope is unknown until the relay is told a widget or department, a null counting as told`, async (t) => {
    const { log } = await make(t, {})
    t.strictSame(await log.scopeOf('x'), { uuid: 'x', unknown: true })
    await log.rememberChat(chat('x', { status: 'open' }))
    await log.rememberChat(chat('x', { widget: {}, department: {} }))
    t.strictSame(await log.scopeOf('x'), { uuid: 'x', unknown: true }, 'no field, {} and {} without id tell nothing')
    await log.rememberChat(chat('x', { department: null }))
    t.strictSame(await log.scopeOf('x'), { uuid: 'x' }, 'department null: known, filtered by nothing')
    await log.rememberChat(chat('y', { widget: { source: null } }))
    t.strictSame(await log.scopeOf('y'), { uuid: 'y' }, 'widget.source null: known')
    await log.rememberChat(chat('z', { widget: null }))
    t.strictSame(await log.scopeOf('z'), { uuid: 'z' }, 'widget null: known')
    t.strictSame(await log.scopeOf('w'), { uuid: 'w', unknown: true }, 'other chats stay unknown')
  })

  t.test(`${name}: a chat's scope is remembered field by field: absent keeps, null clears, a value sets, {} keeps`, async (t) => {
    const { log } = await make(t, {})
    await log.rememberChat(chat('a', { widget: { source: 'lk' }, department: { id: 7 } }))
    t.strictSame(await log.scopeOf('a'), { uuid: 'a', widget: 'lk', department: '7' })
    await log.rememberChat(chat('a', { status: 'open' }))
    t.strictSame(await log.scopeOf('a'), { uuid: 'a', widget: 'lk', department: '7' }, 'a chat without department keeps department 7')
    await log.rememberChat(chat('a', { widget: {}, department: {} }))
    t.strictSame(await log.scopeOf('a'), { uuid: 'a', widget: 'lk', department: '7' }, '{} keeps')
    await log.rememberChat(chat('a', { department: { id: '8' } }))
    t.strictSame(await log.scopeOf('a'), { uuid: 'a', widget: 'lk', department: '8' }, 'a value sets, the widget stays')
    await log.rememberChat(chat('a', { widget: { source: null } }))
    t.strictSame(await log.scopeOf('a'), { uuid: 'a', department: '8' }, 'source null clears the widget only')
    await log.rememberChat(chat('a', { widget: { source: 'site' }, department: null }))
    t.strictSame(await log.scopeOf('a'), { uuid: 'a', widget: 'site' }, 'department null clears it')
    await log.rememberChat(chat('a', { widget: null }))
    t.strictSame(await log.scopeOf('a'), { uuid: 'a' }, 'widget null clears it; still known')
    await log.remember({ id: 1, type: 'standard', chat: chat('a', { department: { id: 9 } }) })
    t.strictSame(await log.scopeOf('a'), { uuid: 'a', department: '9' }, 'a remembered message merges its chat too')
    await log.remember({ id: 2, type: 'standard', chat: chat('a') })
    t.strictSame(await log.scopeOf('a'), { uuid: 'a', department: '9' }, 'and a message whose chat says nothing keeps it')
  })

  t.test(`${name}: typing relays typingPerSecond events per user and chat in a window, independently across users and chats`, async (t) => {
    const { log, nextTypingWindow } = await make(t, { typingPerSecond: 2 })
    await log.rememberChat(chat('a', { widget: { source: 'lk' } }))
    const lk = { uuid: 'a', widget: 'lk' }
    t.strictSame(await log.typing('a', 'user:1'), lk, 'the first answers the scope')
    t.strictSame(await log.typing('a', 'user:1'), lk)
    t.equal(await log.typing('a', 'user:1'), null, 'the third in the window is dropped')
    t.equal(await log.typing('a', 'user:1'), null, 'and the fourth')
    t.strictSame(await log.typing('a', 'operator:1'), lk, 'another user in the chat has its own count')
    t.strictSame(await log.typing('a', 'operator:1'), lk)
    t.equal(await log.typing('a', 'operator:1'), null)
    t.strictSame(await log.typing('b', 'user:1'), { uuid: 'b', unknown: true }, 'the same user in another chat has its own count; b is unknown')
    t.strictSame(await log.typing('b', 'user:1'), { uuid: 'b', unknown: true })
    t.equal(await log.typing('b', 'user:1'), null)
    await nextTypingWindow()
    t.strictSame(await log.typing('a', 'user:1'), lk, 'a new window allows again')
    t.strictSame(await log.typing('a', 'user:1'), lk)
    t.equal(await log.typing('a', 'user:1'), null, 'exactly typingPerSecond of them')
  })
}
