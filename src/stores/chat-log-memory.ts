import type { Chat, Message } from '../protocol/protocol.js'
import type { ChatScope } from '../protocol/routing.js'
import { chatLogDefaults, mergeScope, scopeChange, scopeOfRemembered, type ChatLog, type RememberedScope } from './chat-log.js'

/** A Map that forgets its least recently used entry beyond `limit` (set and `use` count as use). */
class LruMap<K, V> extends Map<K, V> {
  constructor (readonly limit: number) {
    super()
  }

  use (key: K): V | undefined {
    const value = this.get(key)
    if (value !== undefined) this.set(key, value)
    return value
  }

  override set (key: K, value: V): this {
    this.delete(key)
    super.set(key, value)
    if (this.size > this.limit) {
      const oldest = this.keys().next()
      if (oldest.done !== true) this.delete(oldest.value)
    }
    return this
  }
}

export interface MemoryChatLogOptions {
  /** Messages kept per chat (the lowest ids go first). */
  messagesPerChat?: number
  /** UTF-8 bytes of remembered message JSON over all chats (the least recently written chats go first). */
  maxBytes?: number
  /** update_typing relayed per user and chat per one-second window. */
  typingPerSecond?: number
  /** Chats whose scope is kept, and user+chat pairs typing in one window. */
  maxChats?: number
  /** The clock in milliseconds (tests inject one); typing windows are its whole seconds. */
  now?: () => number
}

interface RememberedMessage { json: string, bytes: number }

interface ChatMessages {
  /** Ascending, so the lowest id goes first. */
  ids: number[]
  byId: Map<number, RememberedMessage>
}

/** One process's chat log: the embedded bus. Messages are kept as JSON, so bytes are what they cost. */
export class MemoryChatLog implements ChatLog {
  readonly #messagesPerChat: number
  readonly #maxBytes: number
  readonly #typingPerSecond: number
  readonly #maxChats: number
  readonly #now: () => number
  readonly #scopes: LruMap<string, RememberedScope>
  /** Insertion order is write order: the first chat is the least recently written. */
  readonly #chats = new Map<string, ChatMessages>()
  #bytes = 0
  readonly #typing = new Map<string, number>()
  #typingWindow = Number.NaN

  constructor (options: MemoryChatLogOptions = {}) {
    this.#messagesPerChat = options.messagesPerChat ?? chatLogDefaults.messagesPerChat
    this.#maxBytes = options.maxBytes ?? chatLogDefaults.maxBytes
    this.#typingPerSecond = options.typingPerSecond ?? chatLogDefaults.typingPerSecond
    this.#maxChats = options.maxChats ?? 100_000
    this.#now = options.now ?? Date.now
    this.#scopes = new LruMap(this.#maxChats)
  }

  /** UTF-8 bytes of the messages remembered now, over all chats. */
  get rememberedBytes (): number {
    return this.#bytes
  }

  async remember (message: Message): Promise<void> {
    const json = JSON.stringify(message)
    const bytes = Buffer.byteLength(json)
    const chatUuid = message.chat.uuid
    const chat = this.#chats.get(chatUuid) ?? { ids: [], byId: new Map() }
    this.#chats.delete(chatUuid)
    this.#chats.set(chatUuid, chat)
    const previous = chat.byId.get(message.id)
    if (previous === undefined) insertAscending(chat.ids, message.id)
    chat.byId.set(message.id, { json, bytes })
    this.#bytes += bytes - (previous?.bytes ?? 0)
    while (chat.ids.length > this.#messagesPerChat) this.#forgetLowest(chatUuid, chat)
    this.#fitBudget()
    await this.rememberChat(message.chat)
  }

  async find (chatUuid: string, messageId: number): Promise<Message | undefined> {
    const remembered = this.#chats.get(chatUuid)?.byId.get(messageId)
    return remembered === undefined ? undefined : JSON.parse(remembered.json) as Message
  }

  async forget (chatUuid: string, messageId: number): Promise<void> {
    const chat = this.#chats.get(chatUuid)
    const remembered = chat?.byId.get(messageId)
    if (chat === undefined || remembered === undefined) return
    chat.byId.delete(messageId)
    chat.ids.splice(chat.ids.indexOf(messageId), 1)
    this.#bytes -= remembered.bytes
    if (chat.ids.length === 0) this.#chats.delete(chatUuid)
  }

  async rememberChat (chat: Chat): Promise<void> {
    const change = scopeChange(chat)
    if (change.widget === undefined && change.department === undefined) return
    this.#scopes.set(chat.uuid, mergeScope(this.#scopes.get(chat.uuid) ?? {}, change))
  }

  async scopeOf (chatUuid: string): Promise<ChatScope> {
    return scopeOfRemembered(chatUuid, this.#scopes.use(chatUuid))
  }

  async typing (chatUuid: string, userKey: string): Promise<ChatScope | null> {
    const window = Math.floor(this.#now() / 1000)
    if (window !== this.#typingWindow) {
      this.#typing.clear()
      this.#typingWindow = window
    }
    // Length-prefixed: no two (chat, user) pairs share a key.
    const key = `${chatUuid.length}:${chatUuid}${userKey}`
    const count = this.#typing.get(key) ?? 0
    if (count >= this.#typingPerSecond) return null
    // More typists in one second than chats kept: drop rather than grow (typing is ephemeral).
    if (count === 0 && this.#typing.size >= this.#maxChats) return null
    this.#typing.set(key, count + 1)
    return await this.scopeOf(chatUuid)
  }

  #forgetLowest (chatUuid: string, chat: ChatMessages): void {
    const id = chat.ids.shift()
    if (id !== undefined) {
      this.#bytes -= chat.byId.get(id)?.bytes ?? 0
      chat.byId.delete(id)
    }
    if (chat.ids.length === 0) this.#chats.delete(chatUuid)
  }

  /** Over budget, the least recently written chat loses its lowest ids first, then the next chat. */
  #fitBudget (): void {
    while (this.#bytes > this.#maxBytes) {
      const victim = this.#chats.entries().next()
      if (victim.done === true) return
      this.#forgetLowest(...victim.value)
    }
  }
}

function insertAscending (ids: number[], id: number): void {
  const last = ids.at(-1)
  if (last === undefined || id > last) {
    ids.push(id)
    return
  }
  let low = 0
  let high = ids.length
  while (low < high) {
    const middle = (low + high) >>> 1
    if ((ids[middle] as number) < id) low = middle + 1
    else high = middle
  }
  ids.splice(low, 0, id)
}
