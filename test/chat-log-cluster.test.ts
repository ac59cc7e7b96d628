import { setTimeout as sleep } from 'node:timers/promises'
import type { Cluster } from 'ioredis'
import t, { type Test } from 'tap'
import { ChatLogUnavailableError } from '../src/stores/store-errors.js'
import type { ChatLog } from '../src/stores/chat-log.js'
import { CHAT_LOG_BUCKETS, chatLogBucket, RedisChatLog } from '../src/stores/chat-log-redis.js'
import { slotOf } from '../src/stores/cluster-slot.js'
import { LuaScript } from '../src/stores/redis.js'
import { chat, chatLogSuite, kept, range, sized, type MakeSubject } from './helpers/chat-log-suite.js'
import { startRedisCluster } from './helpers/redis-ha.js'
import { readyClusterClient } from './helpers/cluster-bus.js'

// The Redis chat log in sharded mode on a real 3-master Redis Cluster: the store suite of
// test/chat-log.test.ts, the split byte budget, the bookkeeping, and that every script call is one slot.

const cluster = await startRedisCluster(t)

const readyCluster = async (t: Test, role = 'chat-log-test'): Promise<Cluster> => await readyClusterClient(t, cluster, role, 2000)

/** Polls `check` every 20 ms until it holds; fails after `ms`. */
async function eventually (check: () => Promise<boolean>, what: string, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms
  while (!await check()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`)
    await sleep(20)
  }
}

/** SCAN on every master: the keys of the whole cluster matching `pattern`. */
async function keys (client: Cluster, pattern: string): Promise<string[]> {
  const found: string[] = []
  for (const node of client.nodes('master')) {
    let cursor = '0'
    do {
      const [next, batch] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000)
      cursor = next
      found.push(...batch)
    } while (cursor !== '0')
  }
  return found.sort()
}

const books = (prefix: string, bucket: number): string => `${prefix}chatlog:{b${bucket}}:`
const bucketBytes = async (client: Cluster, prefix: string, bucket: number): Promise<number> =>
  Number(await client.get(`${books(prefix, bucket)}bytes`) ?? 0)

/** `count` chat names of `bucket`, each starting with `stem`. */
function chatsIn (bucket: number, stem: string, count = 1): string[] {
  const names: string[] = []
  for (let n = 0; names.length < count; n++) if (chatLogBucket(`${stem}-${n}`) === bucket) names.push(`${stem}-${n}`)
  return names
}

// ---- the store suite, its chats all in one bucket ----

/** One-byte JSON characters: a chat renamed with them keeps the byte size of its messages. */
const PRINTABLE = Array.from({ length: 0x7f - 0x20 }, (_, index) => String.fromCharCode(0x20 + index)).filter((character) => character !== '"' && character !== '\\')
/** The bucket the most one-character names land in (the suite's chats include four one-character ones). */
const SUITE_BUCKET = range(0, CHAT_LOG_BUCKETS - 1)
  .map((bucket) => ({ bucket, names: PRINTABLE.filter((name) => chatLogBucket(name) === bucket).length }))
  .sort((a, b) => b.names - a.names)[0]?.bucket ?? 0

/** A name of SUITE_BUCKET as long as `name` (its last one or two characters changed), not in `taken`. */
function renamed (name: string, taken: Set<string>): string {
  const fits = (candidate: string): boolean => chatLogBucket(candidate) === SUITE_BUCKET && !taken.has(candidate)
  if (fits(name)) return name
  for (const last of PRINTABLE) if (fits(name.slice(0, -1) + last)) return name.slice(0, -1) + last
  if (name.length >= 2) {
    for (const first of PRINTABLE) for (const last of PRINTABLE) if (fits(name.slice(0, -2) + first + last)) return name.slice(0, -2) + first + last
  }
  throw new Error(`no name like ${name} in bucket ${SUITE_BUCKET}`)
}

/**
 * The suite's chats renamed into SUITE_BUCKET (to the log) and back (from it), names of the same byte
 * length so every message keeps its size: the suite's budget checks then run on one bucket's books,
 * with the whole budget scaled by CHAT_LOG_BUCKETS so that bucket's share is what the suite asked for.
 */
function inOneBucket (log: ChatLog): ChatLog {
  const to = new Map<string, string>()
  const from = new Map<string, string>()
  const name = (uuid: string): string => {
    let target = to.get(uuid)
    if (target === undefined) {
      target = renamed(uuid, new Set(from.keys()))
      to.set(uuid, target)
      from.set(target, uuid)
    }
    return target
  }
  const back = (uuid: string): string => from.get(uuid) ?? uuid
  return {
    remember: async (message) => { await log.remember({ ...message, chat: { ...message.chat, uuid: name(message.chat.uuid) } }) },
    find: async (chatUuid, id) => {
      const found = await log.find(name(chatUuid), id)
      return found === undefined ? undefined : { ...found, chat: { ...found.chat, uuid: back(found.chat.uuid) } }
    },
    forget: async (chatUuid, id) => { await log.forget(name(chatUuid), id) },
    rememberChat: async (changed) => { await log.rememberChat({ ...changed, uuid: name(changed.uuid) }) },
    scopeOf: async (chatUuid) => ({ ...await log.scopeOf(name(chatUuid)), uuid: chatUuid }),
    typing: async (chatUuid, userKey) => {
      const scope = await log.typing(name(chatUuid), userKey)
      return scope === null ? null : { ...scope, uuid: chatUuid }
    }
  }
}

const makeCluster: MakeSubject = async (t, bounds) => {
  const client = await readyCluster(t)
  const prefix = cluster.prefix()
  const maxBytes = bounds.maxBytes === undefined ? {} : { maxBytes: bounds.maxBytes * CHAT_LOG_BUCKETS }
  return {
    log: inOneBucket(new RedisChatLog({ client, prefix, sharded: true, ...bounds, ...maxBytes })),
    bytes: async () => await bucketBytes(client, prefix, SUITE_BUCKET),
    nextTypingWindow: async () => await eventually(async () => (await keys(client, `${prefix}chatlog:*:typing:*`)).length === 0, 'typing window over')
  }
}

chatLogSuite(t, 'redis-cluster (sharded, one bucket)', makeCluster)

// ---- sharded: the split budget ----

/** Reads each bucket's books back from the keys and checks them against its stored messages; answers the total. */
async function auditBuckets (t: Test, client: Cluster, prefix: string, maxBytes: number): Promise<number> {
  const share = Math.floor(maxBytes / CHAT_LOG_BUCKETS)
  const stored = new Map<number, Record<string, string>>()
  const pattern = /^\{b(\d+)\}:(.*):messages$/
  for (const key of await keys(client, `${prefix}chatlog:*:messages`)) {
    const match = pattern.exec(key.slice(`${prefix}chatlog:`.length))
    if (match === null) throw new Error(`${key} is not <prefix>chatlog:{b<k>}:<chat>:messages`)
    const bucket = Number(match[1])
    const member = match[2] as string
    t.equal(chatLogBucket(decodeURIComponent(member)), bucket, `${member} is kept in its own bucket`)
    let chatBytes = 0
    for (const id of await client.hkeys(key)) chatBytes += await client.hstrlen(key, id)
    const bucketStored = stored.get(bucket) ?? {}
    bucketStored[member] = String(chatBytes)
    stored.set(bucket, bucketStored)
    t.equal(await client.zcard(`${books(prefix, bucket)}${member}:order`), await client.hlen(key), `${member}: order and messages hold the same ids`)
  }
  let total = 0
  for (const bucket of range(0, CHAT_LOG_BUCKETS - 1)) {
    const base = books(prefix, bucket)
    const expected = stored.get(bucket) ?? {}
    const sum = Object.values(expected).reduce((bytes, chatBytes) => bytes + Number(chatBytes), 0)
    t.strictSame(await client.hgetall(`${base}bytes-by-chat`), expected, `bucket ${bucket}: bytes-by-chat is the HSTRLEN sum of each chat's messages`)
    t.strictSame((await client.zrange(`${base}chats`, '0', '-1')).sort(), Object.keys(expected).sort(), `bucket ${bucket}: its chats by write are its chats with messages`)
    t.equal(await bucketBytes(client, prefix, bucket), sum, `bucket ${bucket}: the total is the sum`)
    t.ok(sum <= share, `bucket ${bucket}: ${sum} within its share ${share}`)
    total += sum
  }
  t.ok(total <= maxBytes, `the total over all buckets ${total} is within maxBytes ${maxBytes}`)
  return total
}

t.test('sharded: each bucket keeps maxBytes / CHAT_LOG_BUCKETS, evicting only its own least recently written chats', async (t) => {
  const client = await readyCluster(t)
  const prefix = cluster.prefix()
  const maxBytes = CHAT_LOG_BUCKETS * 1000
  const log = new RedisChatLog({ client, prefix, sharded: true, messagesPerChat: 100, maxBytes })
  const [older, burst] = chatsIn(0, 'busy', 2) as [string, string]
  const quiet = chatsIn(1, 'quiet', 3)
  for (const id of [1, 2]) await log.remember(sized(older, id, 100))
  for (const chatUuid of quiet) for (const id of [1, 2, 3]) await log.remember(sized(chatUuid, id, 100))
  for (const id of range(1, 30)) await log.remember(sized(burst, id, 100))
  t.same(await kept(log, older, [1, 2]), [], 'the older chat of the busy bucket went first')
  t.same(await kept(log, burst, range(1, 30)), range(21, 30), 'then the burst lost its lowest ids: the bucket holds its share, 1000 bytes')
  t.equal(await bucketBytes(client, prefix, 0), 1000)
  for (const chatUuid of quiet) t.same(await kept(log, chatUuid, [1, 2, 3]), [1, 2, 3], `${chatUuid} in another bucket lost nothing`)
  t.equal(await bucketBytes(client, prefix, 1), 900)

  // Every bucket over its share: each holds at most its share, so the whole log at most maxBytes.
  for (const bucket of range(0, CHAT_LOG_BUCKETS - 1)) {
    const [filler] = chatsIn(bucket, 'fill') as [string]
    for (const id of range(1, 15)) await log.remember(sized(filler, id, 100))
  }
  const total = await auditBuckets(t, client, prefix, maxBytes)
  t.equal(total, maxBytes, 'every bucket full: the whole budget, no more')
})

t.test('sharded: a chat is bounded by its bucket\'s share; a share of 0 keeps nothing', async (t) => {
  const client = await readyCluster(t)
  const prefix = cluster.prefix()
  const log = new RedisChatLog({ client, prefix, sharded: true, messagesPerChat: 100, maxBytes: CHAT_LOG_BUCKETS * 500 + 15 })
  const [alone] = chatsIn(3, 'alone') as [string]
  for (const id of range(1, 10)) await log.remember(sized(alone, id, 100))
  t.same(await kept(log, alone, range(1, 10)), range(6, 10), 'a lone chat keeps 500 bytes: maxBytes / 16 rounded down')
  const tiny = new RedisChatLog({ client, prefix: cluster.prefix(), sharded: true, maxBytes: CHAT_LOG_BUCKETS - 1 })
  await tiny.remember(sized(alone, 1, 100))
  t.equal(await tiny.find(alone, 1), undefined, 'under one byte a bucket keeps nothing')
})

t.test('sharded: after a mixed run of writes, replacements, forgets and evictions over every bucket the books match the stored messages', async (t) => {
  const client = await readyCluster(t)
  const prefix = cluster.prefix()
  const maxBytes = CHAT_LOG_BUCKETS * 3000
  const log = new RedisChatLog({ client, prefix, sharded: true, messagesPerChat: 8, maxBytes })
  let seed = 13
  const random = (below: number): number => (seed = (seed * 48271) % 2147483647) % below
  for (let round = 0; round < 1500; round++) {
    const chatUuid = `chat-${random(48)}`
    if (random(4) === 0) await log.forget(chatUuid, 1 + random(14))
    else await log.remember(sized(chatUuid, 1 + random(14), 80 + random(1200), ['a', 'é', '€', '😀'][random(4)]))
  }
  const total = await auditBuckets(t, client, prefix, maxBytes)
  t.ok(total > maxBytes / 2, `the run filled the log (${total} bytes)`)
})

t.test('sharded: every key is <prefix>chatlog:{b<bucket>}:…, in its bucket\'s slot, and expires', async (t) => {
  const client = await readyCluster(t)
  const prefix = cluster.prefix()
  const log = new RedisChatLog({ client, prefix, sharded: true, messagesPerChat: 1 })
  await log.remember(sized('a', 1, 200))
  await log.remember(sized('a', 2, 200))
  await log.remember({ ...sized('b', 1, 200), chat: chat('b', { widget: { source: 'lk' } }) })
  await log.rememberChat(chat('c', { department: { id: 1 } }))
  await log.typing('a', 'user:1')
  const [a, b, c] = ['a', 'b', 'c'].map((chatUuid) => books(prefix, chatLogBucket(chatUuid)))
  const expected = [
    `${a}a:messages`, `${a}a:order`, `${a}a:typing:user%3A1`, `${b}b:messages`, `${b}b:order`, `${b}b:scope`, `${c}c:scope`,
    ...[...new Set([a, b])].flatMap((base) => [`${base}bytes`, `${base}bytes-by-chat`, `${base}chats`])
  ].sort()
  const all = await keys(client, `${prefix}*`)
  t.strictSame(all, expected, 'every kind of key is there, under its chat\'s bucket')
  for (const key of all) {
    const ttl = await client.pttl(key)
    t.ok(ttl > 0, `${key.slice(prefix.length)} expires (${ttl} ms)`)
    const bucket = Number(/\{b(\d+)\}/.exec(key)?.[1])
    t.equal(slotOf(key), slotOf(`${books(prefix, bucket)}chats`), `${key.slice(prefix.length)} is in its bucket's slot`)
  }
})

t.test('sharded: chats whose keys expired leave their bucket\'s budget', async (t) => {
  const client = await readyCluster(t)
  const prefix = cluster.prefix()
  const maxBytes = CHAT_LOG_BUCKETS * 100_000
  const shortLived = new RedisChatLog({ client, prefix, sharded: true, ttlSeconds: 1, maxBytes })
  const longLived = new RedisChatLog({ client, prefix, sharded: true, ttlSeconds: 60, maxBytes })
  const old = chatsIn(5, 'old', 20)
  const [keeper, fresh] = chatsIn(5, 'keeper', 2) as [string, string]
  const last = old[19] as string
  for (const chatUuid of old) await shortLived.remember(sized(chatUuid, 1, 100))
  await longLived.remember(sized(keeper, 1, 100))
  t.equal(await bucketBytes(client, prefix, 5), 2100)
  await eventually(async () => await client.exists(`${books(prefix, 5)}${last}:order`) === 0, 'the old chats expired')
  await longLived.remember(sized(last, 2, 150))
  t.equal(await client.hget(`${books(prefix, 5)}bytes-by-chat`, last), '150', 'a chat written again after it expired counts from zero')
  await longLived.remember(sized(fresh, 1, 100))
  await auditBuckets(t, client, prefix, maxBytes)
  t.equal(await bucketBytes(client, prefix, 5), 350, 'nothing of the expired chats is counted')
})

t.test('sharded: two nodes share the typing rate of a user in a chat', async (t) => {
  const prefix = cluster.prefix()
  const nodeA = new RedisChatLog({ client: await readyCluster(t), prefix, sharded: true, typingPerSecond: 2 })
  const nodeB = new RedisChatLog({ client: await readyCluster(t), prefix, sharded: true, typingPerSecond: 2 })
  t.ok(await nodeA.typing('a', 'user:1'))
  t.ok(await nodeB.typing('a', 'user:1'))
  t.equal(await nodeA.typing('a', 'user:1'), null, 'the third over both nodes is dropped on A')
  t.equal(await nodeB.typing('a', 'user:1'), null, 'and on B')
})

t.test('sharded: without a connection every operation fails with ChatLogUnavailableError', async (t) => {
  const client = await readyCluster(t)
  const log = new RedisChatLog({ client, prefix: cluster.prefix(), sharded: true })
  client.disconnect()
  await t.rejects(log.typing('a', 'user:1'), ChatLogUnavailableError)
  await t.rejects(log.remember(sized('a', 1, 100)), ChatLogUnavailableError)
  await t.rejects(log.forget('a', 1), ChatLogUnavailableError)
  await t.rejects(log.find('a', 1), ChatLogUnavailableError)
  await t.rejects(log.scopeOf('a'), ChatLogUnavailableError)
})

// ---- one slot per script call ----

/** Records the KEYS of every LuaScript call (run, runBuffer and any other run…) until the test ends. */
function recordScriptKeys (t: Test): Array<{ sha: string, keys: string[] }> {
  const calls: Array<{ sha: string, keys: string[] }> = []
  const prototype = LuaScript.prototype as unknown as Record<string, unknown>
  for (const name of Object.getOwnPropertyNames(LuaScript.prototype)) {
    const original = prototype[name]
    if (!name.startsWith('run') || typeof original !== 'function') continue
    prototype[name] = function (this: LuaScript, client: unknown, keys: string[], ...rest: unknown[]): unknown {
      calls.push({ sha: this.sha, keys: [...keys] })
      return original.call(this, client, keys, ...rest)
    }
    t.teardown(() => { prototype[name] = original })
  }
  return calls
}

t.test('sharded: every script call\'s KEYS are in one slot, evictions and expiries included (a cluster refuses anything else)', async (t) => {
  const client = await readyCluster(t)
  const calls = recordScriptKeys(t)
  const prefix = cluster.prefix()
  const log = new RedisChatLog({ client, prefix, sharded: true, messagesPerChat: 5, maxBytes: CHAT_LOG_BUCKETS * 2000 })
  let seed = 5
  const random = (below: number): number => (seed = (seed * 48271) % 2147483647) % below
  for (let round = 0; round < 400; round++) {
    const chatUuid = `c-${random(40)}`
    const kind = random(10)
    if (kind === 0) await log.forget(chatUuid, 1 + random(10))
    else if (kind === 1) await log.rememberChat(chat(chatUuid, { widget: { source: `w${random(3)}` } }))
    else if (kind === 2) await log.typing(chatUuid, `user:${random(3)}`)
    else await log.remember({ ...sized(chatUuid, 1 + random(10), 100 + random(400)), chat: chat(chatUuid, { department: { id: random(3) } }) })
  }
  // Expired chats are dropped by a later write in their bucket, from keys the script derives itself.
  const expiryPrefix = cluster.prefix()
  const shortLived = new RedisChatLog({ client, prefix: expiryPrefix, sharded: true, ttlSeconds: 1 })
  const longLived = new RedisChatLog({ client, prefix: expiryPrefix, sharded: true })
  const expiring = chatsIn(7, 'expiring', 3)
  for (const chatUuid of expiring) await shortLived.remember(sized(chatUuid, 1, 100))
  await eventually(async () => await client.exists(`${books(expiryPrefix, 7)}${expiring[2] as string}:order`) === 0, 'expired')
  await longLived.remember(sized(chatsIn(7, 'later')[0] as string, 1, 100))
  t.equal(await client.hlen(`${books(expiryPrefix, 7)}bytes-by-chat`), 1, 'the expired chats left the books')

  const scripts = new Set(calls.map((call) => call.sha))
  t.equal(scripts.size, 4, 'remember, forget, merge scope and typing all ran')
  t.ok(calls.length >= 400, `${calls.length} script calls recorded`)
  const crossing = calls.filter((call) => call.keys.length === 0 || new Set(call.keys.map(slotOf)).size !== 1)
  t.strictSame(crossing, [], 'each call\'s keys map to one slot')
  const slots = new Set(calls.map((call) => slotOf(call.keys[0] as string)))
  t.ok(slots.size > 1 && slots.size <= CHAT_LOG_BUCKETS, `the chats spread over ${slots.size} slots, one per bucket used`)
  await auditBuckets(t, client, prefix, CHAT_LOG_BUCKETS * 2000)
})

t.test('controls: a cluster refuses a script touching another slot than its keys; unsharded, remember is refused there', async (t) => {
  const client = await readyCluster(t)
  const touchOther = "redis.call('SET', KEYS[1], '1') return redis.call('GET', ARGV[1])"
  const [here, there] = ['{slot-a}:x', '{slot-b}:y']
  t.not(slotOf(here), slotOf(there))
  await t.rejects(client.eval(touchOther, 1, here, there), /slot|non local/i, 'a key derived in the script, in another slot: refused')
  const calls = recordScriptKeys(t)
  const log = new RedisChatLog({ client, prefix: cluster.prefix() })
  await t.rejects(log.remember(sized('a', 1, 100)), ChatLogUnavailableError, 'the unsharded layout is cross-slot')
  t.ok(new Set(calls[0]?.keys.map(slotOf)).size > 1, 'its keys span several slots')
})
