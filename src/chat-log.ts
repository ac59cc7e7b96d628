import type { Chat, Message } from './protocol.js'
import { chatScope, type ChatScope } from './routing.js'

/**
 * What the relay remembers about chats in standalone mode: the per-chat message counter, recent
 * messages (so a mark can re-emit the message with its type intact) and each chat's scope (so typing
 * reaches only the consoles whose sources admit the chat). Bounded: the oldest entries go first.
 */
export interface ChatLog {
  nextIndex: (chatUuid: string) => Promise<number>
  remember: (message: Message) => Promise<void>
  find: (chatUuid: string, messageId: number) => Promise<Message | undefined>
  rememberChat: (chat: Chat) => Promise<void>
  scopeOf: (chatUuid: string) => Promise<ChatScope>
}

class BoundedMap<K, V> extends Map<K, V> {
  constructor (readonly limit: number) {
    super()
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

export class MemoryChatLog implements ChatLog {
  readonly #counters = new BoundedMap<string, number>(100_000)
  readonly #messages: BoundedMap<string, Message>
  readonly #scopes = new BoundedMap<string, ChatScope>(100_000)

  constructor (messageLimit = 50_000) {
    this.#messages = new BoundedMap(messageLimit)
  }

  async nextIndex (chatUuid: string): Promise<number> {
    const next = (this.#counters.get(chatUuid) ?? 0) + 1
    this.#counters.set(chatUuid, next)
    return next
  }

  async remember (message: Message): Promise<void> {
    this.#messages.set(`${message.chat.uuid}\n${message.id}`, message)
    await this.rememberChat(message.chat)
  }

  async find (chatUuid: string, messageId: number): Promise<Message | undefined> {
    return this.#messages.get(`${chatUuid}\n${messageId}`)
  }

  async rememberChat (chat: Chat): Promise<void> {
    const scope = chatScope(chat)
    if (scope.widget === undefined && scope.department === undefined) return
    this.#scopes.set(chat.uuid, scope)
  }

  async scopeOf (chatUuid: string): Promise<ChatScope> {
    return this.#scopes.get(chatUuid) ?? { uuid: chatUuid }
  }
}
