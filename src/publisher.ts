import type { Bus } from './stores/bus.js'
import { BusUnavailableError } from './stores/store-errors.js'
import type { ChatLog } from './stores/chat-log.js'
import type { Metrics } from './metrics.js'
import { encodePacket } from './protocol/packet.js'
import { audienceTopics, planDeliveries, type RelayEvent } from './protocol/routing.js'

/**
 * The one way an event enters the bus: plan deliveries, serialize each frame once, publish, and resolve
 * only when the bus accepted every packet (never acknowledge what was not published).
 */
export class Publisher {
  constructor (
    readonly bus: Bus,
    readonly chatLog: ChatLog,
    readonly metrics: Metrics,
    readonly options: { timeoutMs: number, rememberMessages: boolean }
  ) {}

  async publish (event: RelayEvent, source: string): Promise<void> {
    if (!this.bus.isReady()) {
      this.metrics.eventsRejected.inc({ source })
      throw new BusUnavailableError('bus is not connected')
    }
    const acceptedAt = Date.now()
    const publishes = planDeliveries(event).flatMap((delivery) => {
      const packet = encodePacket(delivery, acceptedAt)
      return audienceTopics(delivery.audience).map(async (topic) => await this.bus.publish(topic, packet))
    })
    try {
      await withTimeout(Promise.all(publishes), this.options.timeoutMs)
    } catch (error) {
      this.metrics.eventsRejected.inc({ source })
      throw error instanceof BusUnavailableError ? error : new BusUnavailableError((error as Error).message)
    }
    this.metrics.eventsAccepted.inc({ source })
    await this.record(event)
  }

  private async record (event: RelayEvent): Promise<void> {
    if (event.kind === 'message') {
      const { message } = event
      if (!this.options.rememberMessages) await this.chatLog.rememberChat(message.chat)
      else if (event.event !== 'message_deleted') await this.chatLog.remember(message)
      else {
        // A deleted message can no longer be marked (message_not_found).
        await this.chatLog.forget(message.chat.uuid, message.id)
        await this.chatLog.rememberChat(message.chat)
      }
    } else if (event.kind === 'chat_updated' || event.kind === 'chat_notification') {
      await this.chatLog.rememberChat(event.chat)
    }
  }
}

async function withTimeout<T> (promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new BusUnavailableError(`publish did not complete within ${ms} ms`)), ms)
  })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}
