import { RelayConnection, type IncomingFrame, type Queued } from './connection.js'
import { TypingThrottle } from './typing.js'
import type { ChatClient, ChatEvents, ChatOptions, ChatServerEvent, EventData, Message, SendOptions } from './types.js'

/** Why a sendMessage promise rejected: the relay's `message_not_added` reason, `timeout` or `closed`. */
export class SendError extends Error {
  override readonly name = 'SendError'

  constructor (readonly reason: string, readonly clientMessageId: string) {
    super(`message ${clientMessageId} not added: ${reason}`)
  }
}

interface PendingSend {
  resolve: (message: Message) => void
  reject: (error: SendError) => void
  timer: unknown
  /** Still waiting for a connection. */
  queued: Queued | undefined
}

const CHAT_EVENTS: ReadonlySet<ChatServerEvent> = new Set<ChatServerEvent>([
  'connected', 'message_added', 'message_not_added', 'message_updated', 'message_deleted',
  'typing_updated', 'user_connected', 'user_disconnected', 'error'
])

const DEFAULT_SEND_TIMEOUT_MS = 10_000

/** A customer's or an operator's socket in one chat room (the token's `chat` claim). */
class ChatConnection extends RelayConnection<ChatEvents> implements ChatClient {
  readonly #pending = new Map<string, PendingSend>()
  readonly #typing: TypingThrottle
  /** Prefix of generated client_message_ids: random per client, then a counter. */
  readonly #idPrefix: string
  #sent = 0

  constructor (options: ChatOptions) {
    super('/chat', options, CHAT_EVENTS)
    this.#typing = new TypingThrottle((data) => this.transmit({ type: 'update_typing', data }, false) !== false, this.clock)
    this.#idPrefix = Math.floor(this.random() * 2 ** 48).toString(36)
  }

  async sendMessage (text: string, options: SendOptions = {}): Promise<Message> {
    this.#typing.stop()
    const clientMessageId = options.clientMessageId ?? `${this.#idPrefix}-${++this.#sent}`
    const data: { text: string, client_message_id: string, attachments?: string[] } = { text, client_message_id: clientMessageId }
    if (options.attachments !== undefined) data.attachments = options.attachments
    return await new Promise<Message>((resolve, reject) => {
      const outcome = this.transmit({ type: 'send_message', data }, true)
      if (outcome === false) return reject(new SendError('closed', clientMessageId))
      const timer = this.clock.setTimeout(() => { this.#settle(clientMessageId, new SendError('timeout', clientMessageId)) }, options.timeoutMs ?? DEFAULT_SEND_TIMEOUT_MS)
      this.#pending.set(clientMessageId, { resolve, reject, timer, queued: outcome === true ? undefined : outcome })
    })
  }

  markDelivered (messageId: number): void {
    this.transmit({ type: 'mark_message_delivered', data: { message_id: messageId } }, true)
  }

  markRead (messageId: number): void {
    this.transmit({ type: 'mark_message_read', data: { message_id: messageId } }, true)
  }

  typing (text: string): void {
    this.#typing.input(text)
  }

  protected override frameReceived (frame: IncomingFrame): void {
    if (frame.type === 'message_added') {
      const { message } = frame.data as EventData<'message_added'>
      const id = (message as { client_message_id?: unknown }).client_message_id
      if (id !== undefined) this.#settle(String(id), message)
    } else if (frame.type === 'message_not_added') {
      const { reason, client_message_id: id } = frame.data as EventData<'message_not_added'>
      if (id !== undefined) this.#settle(String(id), new SendError(reason, String(id)))
    }
  }

  protected override stopped (): void {
    this.#typing.dispose()
    for (const id of [...this.#pending.keys()]) this.#settle(id, new SendError('closed', id))
  }

  #settle (clientMessageId: string, outcome: Message | SendError): void {
    const pending = this.#pending.get(clientMessageId)
    if (pending === undefined) return
    this.#pending.delete(clientMessageId)
    this.clock.clearTimeout(pending.timer)
    // A message given up on before it left is never sent after the app was told it failed.
    if (pending.queued !== undefined) this.unqueue(pending.queued)
    if (outcome instanceof SendError) pending.reject(outcome)
    else pending.resolve(outcome)
  }
}

export function connectChat (options: ChatOptions): ChatClient {
  return new ChatConnection(options).start()
}
