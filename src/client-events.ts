import { StoreUnavailableError } from './stores/store-errors.js'
import type { ChatLog } from './stores/chat-log.js'
import type { Connection } from './socket/connection.js'
import type { Metrics } from './metrics.js'
import { ErrorCode, type ClientFrame, type Message, type MessageStatus } from './protocol/protocol.js'
import type { Publisher } from './publisher.js'
import { chatSocketReceives, type RelayEvent } from './protocol/routing.js'
import { WebhookError, type Webhook } from './webhook.js'

type SendMessage = Extract<ClientFrame, { type: 'send_message' }>
type MarkFrame = Extract<ClientFrame, { type: 'mark_message_delivered' | 'mark_message_read' }>
type TypingFrame = Extract<ClientFrame, { type: 'update_typing' }>
type MessageEvent = Extract<RelayEvent, { kind: 'message' }>

const statusRank: Record<MessageStatus, number> = { new: 0, delivered: 1, read: 2 }

/** ISO 8601 with the local offset, like the backend's `send_time` ("2024-05-01T10:00:00+03:00"). */
export function isoWithOffset (date = new Date()): string {
  const offsetMinutes = -date.getTimezoneOffset()
  const sign = offsetMinutes >= 0 ? '+' : '-'
  const abs = Math.abs(offsetMinutes)
  const pad = (value: number, size = 2): string => String(value).padStart(size, '0')
  const local = new Date(date.getTime() + offsetMinutes * 60_000)
  return `${local.toISOString().slice(0, 19)}${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`
}

/**
 * What a `/chat` client event does: with a webhook the backend decides; standalone the relay creates the
 * message itself. Every failure answers the sender (message_not_added or error), never silence.
 */
export class ClientEvents {
  constructor (
    readonly publisher: Publisher,
    readonly chatLog: ChatLog,
    readonly webhook: Webhook | null,
    readonly metrics: Metrics
  ) {}

  async handle (connection: Connection, frame: ClientFrame): Promise<void> {
    switch (frame.type) {
      case 'send_message':
        return await this.sendMessage(connection, frame)
      case 'mark_message_delivered':
      case 'mark_message_read':
        return await this.mark(connection, frame)
      case 'update_typing':
        return await this.typing(connection, frame)
      case 'ping':
        connection.sendFrame({ type: 'pong', data: {} })
        return
      default: {
        const unknownFrame: never = frame
        throw new Error(`unhandled client event ${JSON.stringify(unknownFrame)}`)
      }
    }
  }

  private chatUuid (connection: Connection): string {
    const chatUuid = connection.attributes.chatUuid
    if (chatUuid === undefined) throw new Error('client event on a socket without a chat')
    return chatUuid
  }

  private async sendMessage (connection: Connection, frame: SendMessage): Promise<void> {
    const { data } = frame
    const notAdded = (reason: string): void => {
      const answer: { reason: string, client_message_id?: string | number, text: string } = { reason, text: data.text }
      if (data.client_message_id !== undefined) answer.client_message_id = data.client_message_id
      connection.sendFrame({ type: 'message_not_added', data: answer })
    }
    try {
      if (this.webhook === null) {
        await this.publisher.publish(await this.createMessage(connection, frame), 'send_message', { numbered: true })
        return
      }
      const event = await this.forwarded(connection, frame, 'message_added')
      if (event !== undefined) await this.publisher.publish(event, 'send_message')
    } catch (error) {
      if (error instanceof WebhookError) return notAdded(error.reason)
      if (error instanceof StoreUnavailableError) return notAdded(ErrorCode.unavailable)
      throw error
    }
  }

  /**
   * A message made by the relay (numbered when published); consoles see it by the chat's remembered scope
   * (unknown: unfiltered only).
   */
  private async createMessage (connection: Connection, frame: SendMessage): Promise<MessageEvent> {
    const chatUuid = this.chatUuid(connection)
    const scope = await this.chatLog.scopeOf(chatUuid)
    const chat: Message['chat'] = { uuid: chatUuid }
    if (scope.widget !== undefined) chat.widget = { source: scope.widget }
    if (scope.department !== undefined) chat.department = { id: scope.department }
    const message: Message = {
      id: 0,
      type: 'standard',
      type_role: connection.attributes.role,
      status: 'new',
      text: frame.data.text,
      send_time: isoWithOffset(),
      message_index: 0,
      chat,
      user: connection.user,
      attachments: (frame.data.attachments ?? []).map((uuid) => ({ uuid }))
    }
    const clientMessageId = frame.data.client_message_id
    // Extra fields pass through the wire untouched: the sender matches its optimistic copy by this id.
    if (clientMessageId !== undefined) Object.assign(message, { client_message_id: clientMessageId })
    return { kind: 'message', event: 'message_added', message, scope }
  }

  /** The backend's answer to a forwarded client event, as the event to publish (none: it publishes itself). */
  private async forwarded (connection: Connection, frame: SendMessage | MarkFrame, event: MessageEvent['event']): Promise<MessageEvent | undefined> {
    if (this.webhook === null) return undefined
    const result = await this.webhook.call({
      event: frame.type,
      chat: { uuid: this.chatUuid(connection) },
      user: connection.user,
      data: frame.data
    })
    return result.outcome === 'message' ? { kind: 'message', event, message: result.message } : undefined
  }

  private async mark (connection: Connection, frame: MarkFrame): Promise<void> {
    const fail = (code: string, message: string): void => {
      connection.sendFrame({ type: 'error', data: { code, message } })
    }
    try {
      const event = this.webhook === null
        ? await this.markedMessage(connection, frame)
        : await this.forwarded(connection, frame, 'message_updated')
      if (event === null) return fail(ErrorCode.messageNotFound, `message ${frame.data.message_id} is not known in this chat`)
      if (event !== undefined) await this.publisher.publish(event, frame.type)
    } catch (error) {
      if (error instanceof WebhookError) return fail(ErrorCode.webhookFailed, `${frame.type} failed: ${error.reason}`)
      if (error instanceof StoreUnavailableError) return fail(ErrorCode.unavailable, `${frame.type} not published: bus unavailable`)
      throw error
    }
  }

  /**
   * The known message with its status raised (never lowered); null when the relay never saw it or the
   * sender could not have received it (a customer never marks a note it was never sent).
   */
  private async markedMessage (connection: Connection, frame: MarkFrame): Promise<MessageEvent | null> {
    const chatUuid = this.chatUuid(connection)
    const known = await this.chatLog.find(chatUuid, frame.data.message_id)
    if (known === undefined || !chatSocketReceives(known, connection.attributes)) return null
    const status: MessageStatus = frame.type === 'mark_message_read' ? 'read' : 'delivered'
    const current = known.status ?? 'new'
    const message = { ...known, status: statusRank[status] > statusRank[current] ? status : current }
    // The remembered scope knows at least what the message's chat said (remembering it merged it in).
    return { kind: 'message', event: 'message_updated', message, scope: await this.chatLog.scopeOf(chatUuid) }
  }

  private async typing (connection: Connection, frame: TypingFrame): Promise<void> {
    const { attributes } = connection
    try {
      // With Redis the rate and the chat scope live there too: an outage is `unavailable`, like the publish.
      const chat = await this.chatLog.typing(this.chatUuid(connection), attributes.userKey)
      if (chat === null) {
        // A draft a moment old is replaced by the next one: dropped, counted, not logged one by one.
        this.metrics.typingDropped.inc()
        return
      }
      const event = {
        kind: 'typing' as const,
        chat,
        user: connection.user,
        senderRole: attributes.role,
        senderKey: attributes.userKey,
        stopped: frame.data.stopped
      }
      await this.publisher.publish(frame.data.text === undefined ? event : { ...event, text: frame.data.text }, 'update_typing')
    } catch (error) {
      if (!(error instanceof StoreUnavailableError)) throw error
      connection.sendFrame({ type: 'error', data: { code: ErrorCode.unavailable, message: 'typing not published: bus unavailable' } })
    }
  }
}
