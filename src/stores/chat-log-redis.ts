import { ChatLogUnavailableError } from './store-errors.js'
import { chatLogDefaults, scopeChange, scopeOfRemembered, type ChatLog, type RememberedScope, type ScopeChange } from './chat-log.js'
import type { Chat, Message } from '../protocol/protocol.js'
import { LuaScript, storeCommand, type RedisCommands } from './redis.js'
import type { ChatScope } from '../protocol/routing.js'

export interface RedisChatLogOptions {
  /** One Redis (single or Sentinel), or a Cluster client with `sharded`. */
  client: RedisCommands
  prefix: string
  /**
   * Redis Cluster: every script touches keys of one slot. The chats are spread over CHAT_LOG_BUCKETS
   * buckets, each with its own books and maxBytes / CHAT_LOG_BUCKETS of the budget (see RedisChatLog).
   */
  sharded?: boolean
  /** Each chat's keys live this long after its last write. */
  ttlSeconds?: number
  /** Recent messages kept per chat (the lowest ids go first). */
  messagesPerChat?: number
  /**
   * UTF-8 bytes of remembered message JSON over all chats (the least recently written chats go first);
   * sharded, each bucket keeps maxBytes / CHAT_LOG_BUCKETS (rounded down) of its own chats.
   */
  maxBytes?: number
  /** update_typing relayed per user and chat per one-second window, over every node on this Redis. */
  typingPerSecond?: number
}

/** Merges a scope change into the chat's scope hash; each op is 'keep', 'set' or 'clear'. */
const MERGE_SCOPE_FUNCTION = `
local function merge_scope (key, ttl, widget_op, widget, department_op, department)
  if widget_op == 'keep' and department_op == 'keep' then return end
  redis.call('HSET', key, 'known', '1')
  if widget_op == 'set' then redis.call('HSET', key, 'widget', widget)
  elseif widget_op == 'clear' then redis.call('HDEL', key, 'widget') end
  if department_op == 'set' then redis.call('HSET', key, 'department', department)
  elseif department_op == 'clear' then redis.call('HDEL', key, 'department') end
  redis.call('EXPIRE', key, ttl)
end`

const MERGE_SCOPE = new LuaScript(`${MERGE_SCOPE_FUNCTION}
merge_scope(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return 1`)

/**
 * KEYS: this chat's messages (hash id → JSON), order (ids by id), scope; then the chats by write
 * sequence (zset), the bytes per chat (hash) and the total bytes. ARGV: id, JSON, per-chat bound, byte
 * budget, TTL, the chat's key part, the key prefix, the scope ops. Bytes are HSTRLEN and #json: exact.
 * Other chats' keys (expired or evicted ones) are derived here from the prefix, so they are not in KEYS:
 * sharded, that prefix is the bucket's and carries its hash tag, so they are in the slot of KEYS.
 */
const REMEMBER = new LuaScript(`${MERGE_SCOPE_FUNCTION}
local messages, order, chats, by_chat, total = KEYS[1], KEYS[2], KEYS[4], KEYS[5], KEYS[6]
local id, json, ttl, chat, prefix = ARGV[1], ARGV[2], ARGV[5], ARGV[6], ARGV[7]

local function forget_lowest (chat_messages, chat_order, member, count)
  local popped = redis.call('ZPOPMIN', chat_order, count)
  local freed = 0
  for index = 1, #popped, 2 do
    freed = freed + redis.call('HSTRLEN', chat_messages, popped[index])
    redis.call('HDEL', chat_messages, popped[index])
  end
  if freed > 0 then
    redis.call('HINCRBY', by_chat, member, -freed)
    redis.call('DECRBY', total, freed)
  end
end

-- A chat leaves the budget whole: its recorded bytes, and whatever is left of its keys.
local function drop_chat (member)
  local recorded = tonumber(redis.call('HGET', by_chat, member) or '0')
  redis.call('DEL', prefix .. member .. ':messages', prefix .. member .. ':order')
  redis.call('HDEL', by_chat, member)
  redis.call('ZREM', chats, member)
  if recorded ~= 0 then redis.call('DECRBY', total, recorded) end
end

-- Chats whose keys expired are the least recently written ones: forget their bytes, a few per write.
for _ = 1, 16 do
  local head = redis.call('ZRANGE', chats, 0, 0)[1]
  if head == nil or redis.call('EXISTS', prefix .. head .. ':order') == 1 then break end
  drop_chat(head)
end
if redis.call('EXISTS', order) == 0 then drop_chat(chat) end

local previous = redis.call('HSTRLEN', messages, id)
redis.call('HSET', messages, id, json)
redis.call('ZADD', order, id, id)
local delta = #json - previous
redis.call('HINCRBY', by_chat, chat, delta)
redis.call('INCRBY', total, delta)
local excess = redis.call('ZCARD', order) - tonumber(ARGV[3])
if excess > 0 then forget_lowest(messages, order, chat, excess) end

local newest = redis.call('ZRANGE', chats, -1, -1, 'WITHSCORES')
redis.call('ZADD', chats, (newest[2] and tonumber(newest[2]) or 0) + 1, chat)

local budget = tonumber(ARGV[4])
while tonumber(redis.call('GET', total) or '0') > budget do
  local victim = redis.call('ZRANGE', chats, 0, 0)[1]
  if victim == nil then
    redis.call('DEL', total)
    break
  end
  local victim_order = prefix .. victim .. ':order'
  forget_lowest(prefix .. victim .. ':messages', victim_order, victim, 1)
  if redis.call('ZCARD', victim_order) == 0 then drop_chat(victim) end
end

merge_scope(KEYS[3], ttl, ARGV[8], ARGV[9], ARGV[10], ARGV[11])
for _, key in ipairs({ messages, order, chats, by_chat, total }) do redis.call('EXPIRE', key, ttl) end
return 1`)

/**
 * KEYS: this chat's messages and order, then the chats by write sequence, the bytes per chat and the
 * total. ARGV: id, the chat's key part. A chat left without messages leaves the budget's books.
 */
const FORGET = new LuaScript(`
local messages, order, chats, by_chat, total = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, chat = ARGV[1], ARGV[2]
local freed = redis.call('HSTRLEN', messages, id)
if redis.call('HDEL', messages, id) == 0 then return 0 end
redis.call('ZREM', order, id)
if redis.call('ZCARD', order) == 0 then
  local recorded = tonumber(redis.call('HGET', by_chat, chat) or '0')
  redis.call('HDEL', by_chat, chat)
  redis.call('ZREM', chats, chat)
  if recorded ~= 0 then redis.call('DECRBY', total, recorded) end
else
  redis.call('HINCRBY', by_chat, chat, -freed)
  redis.call('DECRBY', total, freed)
end
return 1`)

/** Counts this user's typing in the chat in a one-second window; nil when over, else the scope hash. */
const TYPING = new LuaScript(`
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], 1000) end
if count > tonumber(ARGV[1]) then return false end
return redis.call('HGETALL', KEYS[2])`)

/**
 * Sharded mode splits the byte budget into this many buckets. Every node must use the same number (a
 * chat's keys are named after its bucket), so it is a constant, not a setting.
 */
export const CHAT_LOG_BUCKETS = 16

/** The bucket of a chat in sharded mode: FNV-1a (32 bits) of the uuid's UTF-8 bytes, mod CHAT_LOG_BUCKETS. */
export function chatLogBucket (chatUuid: string): number {
  let hash = 0x811c9dc5
  for (const byte of Buffer.from(chatUuid)) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0
  return hash % CHAT_LOG_BUCKETS
}

/**
 * The standalone-mode chat log shared by every node, under `<prefix>chatlog:`. Per chat (`<chat>:`):
 * `messages` (hash by
 * id) with `order` (ids by score, trimmed to a bound), `scope` (hash: `known`, `widget`, `department`),
 * `typing:<user>` (a one-second counter). Over all chats: `chats` (zset by write sequence), `bytes-by-chat`
 * (hash) and `bytes` (the total), so the budget evicts the least recently written chats first. Every key
 * expires after a quiet TTL.
 *
 * Sharded (Redis Cluster), a script may only touch keys of one slot, and remembering a message touches
 * the books and other chats' keys (eviction). So the chats are split into CHAT_LOG_BUCKETS buckets by a
 * hash of their uuid, and everything above lives per bucket, under `<prefix>chatlog:{b<k>}:` — the chat's
 * keys and its bucket's `chats`, `bytes-by-chat` and `bytes` share the hash tag `{b<k>}`, one slot. (The
 * tag follows the prefix, as the sharded streams' `<prefix>history:{<topic>}` do, so every key still
 * starts with REDIS_PREFIX.) Each bucket has maxBytes / CHAT_LOG_BUCKETS of the budget and evicts its own
 * least recently written chats, so the total stays within maxBytes. The price: the eviction order is
 * per bucket, not global (a busy bucket evicts while a quiet one keeps older chats), and one chat keeps
 * at most a bucket's share of the budget (4 MiB of the default 64 MiB).
 */
export class RedisChatLog implements ChatLog {
  readonly #client: RedisCommands
  readonly #prefix: string
  readonly #sharded: boolean
  readonly #ttlSeconds: number
  readonly #messagesPerChat: number
  /** The budget of the books a chat is counted in: all of it, or sharded one bucket's share. */
  readonly #budget: number
  readonly #typingPerSecond: number

  constructor (options: RedisChatLogOptions) {
    this.#client = options.client
    this.#prefix = `${options.prefix}chatlog:`
    this.#sharded = options.sharded ?? false
    this.#ttlSeconds = options.ttlSeconds ?? 7 * 24 * 3600
    this.#messagesPerChat = options.messagesPerChat ?? chatLogDefaults.messagesPerChat
    const maxBytes = options.maxBytes ?? chatLogDefaults.maxBytes
    this.#budget = this.#sharded ? Math.floor(maxBytes / CHAT_LOG_BUCKETS) : maxBytes
    this.#typingPerSecond = options.typingPerSecond ?? chatLogDefaults.typingPerSecond
  }

  async remember (message: Message): Promise<void> {
    const chatUuid = message.chat.uuid
    const books = this.#books(chatUuid)
    await this.#command('remember message', async () => await REMEMBER.run(
      this.#client,
      [
        this.#key(chatUuid, 'messages'), this.#key(chatUuid, 'order'), this.#key(chatUuid, 'scope'),
        `${books}chats`, `${books}bytes-by-chat`, `${books}bytes`
      ],
      [
        message.id, JSON.stringify(message), this.#messagesPerChat, this.#budget, this.#ttlSeconds,
        encodeURIComponent(chatUuid), books, ...scopeOps(scopeChange(message.chat))
      ]
    ))
  }

  async find (chatUuid: string, messageId: number): Promise<Message | undefined> {
    const json = await this.#command('find message', async () =>
      await this.#client.hget(this.#key(chatUuid, 'messages'), String(messageId)))
    return json === null ? undefined : JSON.parse(json) as Message
  }

  async forget (chatUuid: string, messageId: number): Promise<void> {
    const books = this.#books(chatUuid)
    await this.#command('forget message', async () => await FORGET.run(
      this.#client,
      [
        this.#key(chatUuid, 'messages'), this.#key(chatUuid, 'order'),
        `${books}chats`, `${books}bytes-by-chat`, `${books}bytes`
      ],
      [messageId, encodeURIComponent(chatUuid)]
    ))
  }

  async rememberChat (chat: Chat): Promise<void> {
    const change = scopeChange(chat)
    if (change.widget === undefined && change.department === undefined) return
    await this.#command('remember chat', async () =>
      await MERGE_SCOPE.run(this.#client, [this.#key(chat.uuid, 'scope')], [this.#ttlSeconds, ...scopeOps(change)]))
  }

  async scopeOf (chatUuid: string): Promise<ChatScope> {
    const fields = await this.#command('chat scope', async () => await this.#client.hgetall(this.#key(chatUuid, 'scope')))
    return scopeOfRemembered(chatUuid, rememberedScope(Object.entries(fields)))
  }

  async typing (chatUuid: string, userKey: string): Promise<ChatScope | null> {
    const typingKey = `${this.#key(chatUuid, 'typing')}:${encodeURIComponent(userKey)}`
    const fields = await this.#command('typing', async () =>
      await TYPING.run(this.#client, [typingKey, this.#key(chatUuid, 'scope')], [this.#typingPerSecond]))
    if (!Array.isArray(fields)) return null
    const entries: Array<[string, string]> = []
    for (let index = 0; index + 1 < fields.length; index += 2) entries.push([String(fields[index]), String(fields[index + 1])])
    return scopeOfRemembered(chatUuid, rememberedScope(entries))
  }

  /**
   * Where the chat's keys and the books it is counted in live: `<prefix>chatlog:`, or sharded its bucket's
   * `<prefix>chatlog:{b<k>}:`. Every key of a bucket starts with this same text, which ends with the
   * tag's `}`, so they share a slot whatever the prefix holds. REMEMBER derives other chats' keys from it.
   */
  #books (chatUuid: string): string {
    return this.#sharded ? `${this.#prefix}{b${chatLogBucket(chatUuid)}}:` : this.#prefix
  }

  #key (chatUuid: string, part: string): string {
    return `${this.#books(chatUuid)}${encodeURIComponent(chatUuid)}:${part}`
  }

  async #command<T> (what: string, run: () => Promise<T>): Promise<T> {
    // storeCommand reads only `status`, which a Cluster has as well ('ready' once it knows the slots).
    return await storeCommand(this.#client, ChatLogUnavailableError, `chat log: ${what}`, run)
  }
}

/** The ARGV of merge_scope: op and value for the widget, then for the department. */
function scopeOps (change: ScopeChange): string[] {
  const op = (value: string | null | undefined): [string, string] =>
    value === undefined ? ['keep', ''] : value === null ? ['clear', ''] : ['set', value]
  return [...op(change.widget), ...op(change.department)]
}

/** The scope hash's fields; undefined when the relay was never told (no `known` field). */
function rememberedScope (fields: Array<[string, string]>): RememberedScope | undefined {
  const scope: RememberedScope = {}
  let known = false
  for (const [field, value] of fields) {
    if (field === 'known') known = true
    else if (field === 'widget') scope.widget = value
    else if (field === 'department') scope.department = value
  }
  return known ? scope : undefined
}
