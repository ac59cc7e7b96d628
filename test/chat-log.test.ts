import type { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { ChatLogUnavailableError } from '../src/stores/store-errors.js'
import type { ChatLog } from '../src/stores/chat-log.js'
import { MemoryChatLog } from '../src/stores/chat-log-memory.js'
import { RedisChatLog } from '../src/stores/chat-log-redis.js'
import type { Chat, Message } from '../src/protocol/protocol.js'
import { createRedisClient } from '../src/stores/redis.js'
import { startRedis } from './helpers/redis.js'

interface Bounds {
  messagesPerChat?: number
  maxBytes?: number
  typingPerSecond?: number
}

/** One chat log under test, with what the suite needs to see inside it. */
interface Subject {
  log: ChatLog
  /** The byte total the log itself keeps. */
  bytes: () => Promise<number>
  /** Resolves once a new typing window has begun. */
  nextTypingWindow: () => Promise<void>
}

type MakeSubject = (t: Test, bounds: Bounds) => Promise<Subject>

/** A standard message whose JSON is exactly `size` UTF-8 bytes (`fill` is 1 to 4 bytes a character). */
function sized (chatUuid: string, id: number, size: number, fill = 'x'): Message {
  const message: Message = { id, type: 'standard', chat: { uuid: chatUuid }, text: '' }
  const room = size - Buffer.byteLength(JSON.stringify(message))
  const fillBytes = Buffer.byteLength(fill)
  message.text = fill.repeat(Math.floor(room / fillBytes)) + 'x'.repeat(room % fillBytes)
  if (Buffer.byteLength(JSON.stringify(message)) !== size) throw new Error(`cannot size message ${id} to ${size} bytes`)
  return message
}

/** Which of `ids` the log still finds in the chat. */
async function kept (log: ChatLog, chatUuid: string, ids: number[]): Promise<number[]> {
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

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, index) => from + index)
const chat = (uuid: string, fields: Partial<Chat> = {}): Chat => ({ uuid, ...fields })

function chatLogSuite (t: Test, name: string, make: MakeSubject): void {
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

// ---- memory ----

const makeMemory: MakeSubject = async (_t, bounds) => {
  let clock = 1_700_000_000_000
  const log = new MemoryChatLog({ ...bounds, now: () => clock })
  return {
    log,
    bytes: async () => log.rememberedBytes,
    nextTypingWindow: async () => { clock += 1000 }
  }
}

chatLogSuite(t, 'memory', makeMemory)

t.test('memory: a typing window is one whole second of the clock', async (t) => {
  let clock = 4_999
  const log = new MemoryChatLog({ typingPerSecond: 1, now: () => clock })
  t.ok(await log.typing('a', 'user:1'))
  t.equal(await log.typing('a', 'user:1'), null)
  clock = 5_000
  t.ok(await log.typing('a', 'user:1'), 'the next second is a new window')
  clock = 5_999
  t.equal(await log.typing('a', 'user:1'), null, 'its last millisecond still counts in it')
})

t.test('memory: scopes and typists are bounded by maxChats, the least recently used going first', async (t) => {
  let clock = 0
  const log = new MemoryChatLog({ maxChats: 3, typingPerSecond: 1, now: () => clock })
  for (const chatUuid of ['a', 'b', 'c']) await log.rememberChat(chat(chatUuid, { widget: { source: 'lk' } }))
  await log.scopeOf('a')
  await log.rememberChat(chat('d', { widget: { source: 'lk' } }))
  t.strictSame(await log.scopeOf('a'), { uuid: 'a', widget: 'lk' }, 'a read scope is kept')
  t.strictSame(await log.scopeOf('b'), { uuid: 'b', unknown: true }, 'the least recently used scope is forgotten: unknown again')
  for (const user of ['user:1', 'user:2', 'user:3']) t.ok(await log.typing('a', user))
  t.equal(await log.typing('a', 'user:4'), null, 'more typists in one second than maxChats are dropped')
  clock += 1000
  t.ok(await log.typing('a', 'user:4'), 'the next window starts empty')
})

// ---- Redis ----

const redis = await startRedis(t)

async function readyClient (t: Test): Promise<Redis> {
  const client = createRedisClient(redis.url, { role: 'chat-log-test', retryMaxMs: 100, commandTimeoutMs: 2000 })
  t.teardown(() => { client.disconnect() })
  if (client.status !== 'ready') await new Promise((resolve) => client.once('ready', resolve))
  return client
}

/** Polls `check` every 20 ms until it holds; fails after `ms`. */
async function eventually (check: () => Promise<boolean>, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms
  while (!await check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

async function keys (client: Redis, pattern: string): Promise<string[]> {
  const found: string[] = []
  let cursor = '0'
  do {
    const [next, batch] = await client.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
    cursor = next
    found.push(...batch)
  } while (cursor !== '0')
  return found.sort()
}

const makeRedis: MakeSubject = async (t, bounds) => {
  const client = await readyClient(t)
  const prefix = redis.prefix()
  return {
    log: new RedisChatLog({ client, prefix, ...bounds }),
    bytes: async () => Number(await client.get(`${prefix}chatlog:bytes`) ?? 0),
    nextTypingWindow: async () => await eventually(async () => (await keys(client, `${prefix}chatlog:*:typing:*`)).length === 0, 'typing window over')
  }
}

chatLogSuite(t, 'redis', makeRedis)

/** Reads the budget's bookkeeping back from the keys and checks it against the stored messages. */
async function auditRedis (t: Test, client: Redis, prefix: string, budget: number): Promise<void> {
  const base = `${prefix}chatlog:`
  const byChat = await client.hgetall(`${base}bytes-by-chat`)
  const chats = (await client.zrange(`${base}chats`, '0', '-1')).sort()
  let total = 0
  const stored: Record<string, string> = {}
  for (const key of await keys(client, `${base}*:messages`)) {
    const member = key.slice(base.length, -':messages'.length)
    let chatBytes = 0
    for (const id of await client.hkeys(key)) chatBytes += await client.hstrlen(key, id)
    stored[member] = String(chatBytes)
    total += chatBytes
    t.equal(await client.zcard(`${base}${member}:order`), await client.hlen(key), `${member}: order and messages hold the same ids`)
  }
  t.strictSame(byChat, stored, 'bytes-by-chat is the HSTRLEN sum of each chat\'s messages')
  t.strictSame(chats, Object.keys(stored).sort(), 'the chats by write are the chats with messages')
  t.equal(Number(await client.get(`${base}bytes`) ?? 0), total, 'the total is the sum')
  t.ok(total <= budget, `the total ${total} is within the budget ${budget}`)
}

t.test('redis: after a mixed run of writes, replacements and evictions the bookkeeping matches the stored messages', async (t) => {
  const client = await readyClient(t)
  const prefix = redis.prefix()
  const budget = 20_000
  const log = new RedisChatLog({ client, prefix, messagesPerChat: 8, maxBytes: budget })
  let seed = 7
  const random = (below: number): number => (seed = (seed * 48271) % 2147483647) % below
  for (let round = 0; round < 600; round++) {
    const fill = ['a', 'é', '€', '😀'][random(4)]
    await log.remember(sized(`chat-${random(12)}`, 1 + random(14), 80 + random(1500), fill))
  }
  await auditRedis(t, client, prefix, budget)
})

t.test('redis: after a mixed run of writes and forgets the bookkeeping matches the stored messages', async (t) => {
  const client = await readyClient(t)
  const prefix = redis.prefix()
  const budget = 20_000
  const log = new RedisChatLog({ client, prefix, messagesPerChat: 8, maxBytes: budget })
  let seed = 11
  const random = (below: number): number => (seed = (seed * 48271) % 2147483647) % below
  for (let round = 0; round < 600; round++) {
    const chatUuid = `chat-${random(6)}`
    if (random(3) === 0) await log.forget(chatUuid, 1 + random(14))
    else await log.remember(sized(chatUuid, 1 + random(14), 80 + random(1500)))
  }
  await auditRedis(t, client, prefix, budget)
})

t.test('redis: two nodes share the typing rate of a user in a chat', async (t) => {
  const prefix = redis.prefix()
  const nodeA = new RedisChatLog({ client: await readyClient(t), prefix, typingPerSecond: 2 })
  const nodeB = new RedisChatLog({ client: await readyClient(t), prefix, typingPerSecond: 2 })
  const otherRelay = new RedisChatLog({ client: await readyClient(t), prefix: redis.prefix(), typingPerSecond: 2 })
  t.ok(await nodeA.typing('a', 'user:1'))
  t.ok(await nodeB.typing('a', 'user:1'))
  t.equal(await nodeA.typing('a', 'user:1'), null, 'the third over both nodes is dropped on A')
  t.equal(await nodeB.typing('a', 'user:1'), null, 'and on B')
  t.ok(await otherRelay.typing('a', 'user:1'), 'a relay on another prefix counts on its own')
})

t.test('redis: every chat log key expires', async (t) => {
  const client = await readyClient(t)
  const prefix = redis.prefix()
  const log = new RedisChatLog({ client, prefix, messagesPerChat: 1 })
  await log.remember(sized('a', 1, 200))
  await log.remember(sized('a', 2, 200))
  await log.remember({ ...sized('b', 1, 200), chat: chat('b', { widget: { source: 'lk' } }) })
  await log.rememberChat(chat('c', { department: { id: 1 } }))
  await log.typing('a', 'user:1')
  const all = await keys(client, `${prefix}*`)
  t.strictSame(all.map((key) => key.slice(`${prefix}chatlog:`.length)), [
    'a:messages', 'a:order', 'a:typing:user%3A1', 'b:messages', 'b:order', 'b:scope',
    'bytes', 'bytes-by-chat', 'c:scope', 'chats'
  ], 'every kind of key is there')
  for (const key of all) {
    const ttl = await client.pttl(key)
    t.ok(ttl > 0, `${key.slice(prefix.length)} expires (${ttl} ms)`)
  }
})

t.test('redis: chats whose keys expired leave the budget, also when many expired at once', async (t) => {
  const client = await readyClient(t)
  const prefix = redis.prefix()
  const budget = 100_000
  // Two relays on one prefix: the long TTL keeps the shared keys while the short-lived chats expire.
  const shortLived = new RedisChatLog({ client, prefix, ttlSeconds: 1, maxBytes: budget })
  const longLived = new RedisChatLog({ client, prefix, ttlSeconds: 60, maxBytes: budget })
  for (let index = 1; index <= 20; index++) await shortLived.remember(sized(`old-${index}`, 1, 100))
  await longLived.remember(sized('keeper', 1, 100))
  t.equal(Number(await client.get(`${prefix}chatlog:bytes`)), 2100)
  await eventually(async () => await client.exists(`${prefix}chatlog:old-20:order`) === 0, 'the old chats expired')
  await longLived.remember(sized('old-20', 2, 150))
  t.equal(await client.hget(`${prefix}chatlog:bytes-by-chat`, 'old-20'), '150', 'a chat written again after it expired counts from zero')
  await longLived.remember(sized('new', 1, 100))
  await auditRedis(t, client, prefix, budget)
  t.equal(Number(await client.get(`${prefix}chatlog:bytes`)), 350, 'nothing of the expired chats is counted')
})

t.test('redis: a user who keeps typing is relayed again once the window that began with their first event ends', async (t) => {
  const log = new RedisChatLog({ client: await readyClient(t), prefix: redis.prefix(), typingPerSecond: 2 })
  const started = Date.now()
  t.ok(await log.typing('a', 'user:1'))
  t.ok(await log.typing('a', 'user:1'))
  await eventually(async () => await log.typing('a', 'user:1') !== null, 'typing relayed again while the user kept typing', 3000)
  const elapsed = Date.now() - started
  t.ok(elapsed >= 900, `not before the window ended (${elapsed} ms)`)
})

t.test('redis: without a connection every operation fails with ChatLogUnavailableError', async (t) => {
  const client = await readyClient(t)
  const log = new RedisChatLog({ client, prefix: redis.prefix() })
  client.disconnect()
  await t.rejects(log.typing('a', 'user:1'), ChatLogUnavailableError)
  await t.rejects(log.remember(sized('a', 1, 100)), ChatLogUnavailableError)
  await t.rejects(log.scopeOf('a'), ChatLogUnavailableError)
})
