import type { Redis } from 'ioredis'
import { BusUnavailableError } from './bus.js'
import type { ChatLog } from './chat-log.js'
import type { Chat, Message } from './protocol.js'
import { LuaScript } from './redis.js'
import { chatScope, type ChatScope } from './routing.js'

export interface RedisChatLogOptions {
  client: Redis
  prefix: string
  /** Each chat's keys live this long after its last write. */
  ttlSeconds?: number
  /** Recent messages kept per chat (the lowest ids go first). */
  messagesPerChat?: number
}

const INCREMENT = new LuaScript(`
local next = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return next`)

const REMEMBER = new LuaScript(`
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[1])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if excess > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[2], excess)
  for index = 1, #popped, 2 do redis.call('HDEL', KEYS[1], popped[index]) end
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1`)

/**
 * The standalone-mode chat log shared by every node: `<prefix>chatlog:<chat>:counter` (INCR, so ids
 * strictly increase whichever node creates the message), `:messages` (hash by id) with `:order` (ids by
 * score, trimmed to a bound) and `:scope` (widget and department). Every key expires after a quiet TTL.
 */
export class RedisChatLog implements ChatLog {
  readonly #client: Redis
  readonly #prefix: string
  readonly #ttlSeconds: number
  readonly #messagesPerChat: number

  constructor (options: RedisChatLogOptions) {
    this.#client = options.client
    this.#prefix = `${options.prefix}chatlog:`
    this.#ttlSeconds = options.ttlSeconds ?? 7 * 24 * 3600
    this.#messagesPerChat = options.messagesPerChat ?? 500
  }

  async nextIndex (chatUuid: string): Promise<number> {
    const next = await this.#command('next index', async () =>
      await INCREMENT.run(this.#client, [this.#key(chatUuid, 'counter')], [this.#ttlSeconds]))
    return Number(next)
  }

  async remember (message: Message): Promise<void> {
    const chatUuid = message.chat.uuid
    await this.#command('remember message', async () => await REMEMBER.run(
      this.#client,
      [this.#key(chatUuid, 'messages'), this.#key(chatUuid, 'order')],
      [message.id, JSON.stringify(message), this.#messagesPerChat, this.#ttlSeconds]
    ))
    await this.rememberChat(message.chat)
  }

  async find (chatUuid: string, messageId: number): Promise<Message | undefined> {
    const json = await this.#command('find message', async () =>
      await this.#client.hget(this.#key(chatUuid, 'messages'), String(messageId)))
    return json === null ? undefined : JSON.parse(json) as Message
  }

  async rememberChat (chat: Chat): Promise<void> {
    const scope = chatScope(chat)
    if (scope.widget === undefined && scope.department === undefined) return
    await this.#command('remember chat', async () =>
      await this.#client.set(this.#key(chat.uuid, 'scope'), JSON.stringify(scope), 'EX', this.#ttlSeconds))
  }

  async scopeOf (chatUuid: string): Promise<ChatScope> {
    const json = await this.#command('chat scope', async () => await this.#client.get(this.#key(chatUuid, 'scope')))
    return json === null ? { uuid: chatUuid } : JSON.parse(json) as ChatScope
  }

  #key (chatUuid: string, part: string): string {
    return `${this.#prefix}${encodeURIComponent(chatUuid)}:${part}`
  }

  async #command<T> (what: string, run: () => Promise<T>): Promise<T> {
    if (this.#client.status !== 'ready') throw new BusUnavailableError(`chat log: ${what}: redis is not connected`)
    try {
      return await run()
    } catch (error) {
      throw new BusUnavailableError(`chat log: ${what}: ${(error as Error).message}`)
    }
  }
}
