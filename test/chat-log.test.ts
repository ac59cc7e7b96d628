import type { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { ChatLogUnavailableError } from '../src/stores/store-errors.js'
import { MemoryChatLog } from '../src/stores/chat-log-memory.js'
import { RedisChatLog } from '../src/stores/chat-log-redis.js'
import { createRedisClient } from '../src/stores/redis.js'
import { startRedis } from './helpers/redis.js'
import { chat, chatLogSuite, sized, type MakeSubject } from './helpers/chat-log-suite.js'

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
