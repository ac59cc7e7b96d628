import { randomBytes } from 'node:crypto'
import { ALREADY_APPENDED, type Bus, type DurableEvent } from './stores/bus.js'
import { BusUnavailableError } from './stores/store-errors.js'
import type { ChatLog } from './stores/chat-log.js'
import type { Metrics } from './metrics.js'
import { durableParts, encodePacket } from './protocol/packet.js'
import type { Message, ServerFrame } from './protocol/protocol.js'
import { audienceTopics, planDeliveries, type RelayEvent } from './protocol/routing.js'

/**
 * Where a relay-made message's number goes in its JSON until its chat's counter gives it (`id` and
 * `message_index`). Random per process: no text a client sends can spell it, and JSON escapes the
 * control characters around it, so it splits the frame exactly where the number belongs.
 */
const NUMBER_MARK = `\u0001${randomBytes(12).toString('hex')}\u0001`
const NUMBER_MARK_JSON = JSON.stringify(NUMBER_MARK)

export interface PublishOptions {
  /** A message the relay made: see `publish`. */
  numbered?: boolean
  /**
   * Publish at most once under this token (route and Idempotency-Key): a first attempt answered 503
   * whose append reached Redis late is not published a second time by the retry (which answers 200).
   */
  once?: string
}

/** Events kept in streams and replayed (SPEC Recovery); the rest are ephemeral. */
function isDurable (event: RelayEvent): boolean {
  return event.kind !== 'typing' && event.kind !== 'presence'
}

/**
 * The one way an event enters the bus: plan deliveries, serialize each frame once, record it, then
 * publish it, and resolve only when the bus accepted all of it (never acknowledge what was not published).
 */
export class Publisher {
  constructor (
    readonly bus: Bus,
    readonly chatLog: ChatLog,
    readonly metrics: Metrics,
    readonly options: { timeoutMs: number, rememberMessages: boolean, onceTtlSeconds: number, lanes?: number }
  ) {}

  /**
   * A message event with `numbered` is one the relay made: its `id` and `message_index` are taken from
   * its chat's counter in the same step that appends it, so numbers grow in the order every socket gets
   * them.
   */
  async publish (event: RelayEvent, source: string, options: PublishOptions = {}): Promise<void> {
    const numbered = options.numbered === true
    if (!(isDurable(event) ? this.bus.canAppend() : this.bus.isReady())) {
      this.metrics.eventsRejected.inc({ source })
      throw new BusUnavailableError('bus is not connected')
    }
    let published: Message | undefined
    try {
      // Recorded first: a record that fails publishes nothing, a publish that fails leaves a record
      // the retry of the same event writes again.
      if (!numbered) await this.record(event)
      const number = await withTimeout(this.#send(event, numbered, options.once), this.options.timeoutMs)
      if (numbered && event.kind === 'message' && number !== ALREADY_APPENDED) published = { ...event.message, id: number, message_index: number }

    } catch (error) {
      this.metrics.eventsRejected.inc({ source })
      throw error instanceof BusUnavailableError ? error : new BusUnavailableError((error as Error).message)
    }
    this.metrics.eventsAccepted.inc({ source })
    if (published !== undefined) {
      // Its number came with the publish, so it is remembered after it: everyone has it, only a mark of it would miss.
      await this.record({ kind: 'message', event: 'message_added', message: published }).catch(() => this.metrics.chatLogFailures.inc())
    }
  }

  async #send (event: RelayEvent, numbered: boolean, once: string | undefined): Promise<number> {
    const acceptedAt = Date.now()
    const deliveries = planDeliveries(numbered && event.kind === 'message' ? withNumberMark(event) : event)
    if (!isDurable(event)) {
      await Promise.all(deliveries.flatMap((delivery) => {
        const packet = encodePacket(delivery, acceptedAt)
        return audienceTopics(delivery.audience, this.options.lanes).map(async (topic) => await this.bus.publish(topic, packet))
      }))
      return 0
    }
    if (deliveries.length === 0) return 0
    const durable: DurableEvent = { payloads: [], appends: [] }
    const payloadOf = new Map<ServerFrame, number>()
    for (const delivery of deliveries) {
      const { routingHead, payloadHead } = durableParts(delivery, acceptedAt)
      let payload = payloadOf.get(delivery.frame)
      if (payload === undefined) {
        payload = durable.payloads.push(numbered ? splitAtNumber(payloadHead) : [payloadHead]) - 1
        payloadOf.set(delivery.frame, payload)
      }
      for (const topic of audienceTopics(delivery.audience, this.options.lanes)) durable.appends.push({ topic, routingHead, payload })
    }
    if (numbered && event.kind === 'message') durable.numbered = { chatUuid: event.message.chat.uuid }
    if (once !== undefined) durable.once = { token: once, ttlSeconds: this.options.onceTtlSeconds }
    return await this.bus.append(durable)
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

function withNumberMark (event: Extract<RelayEvent, { kind: 'message' }>): RelayEvent {
  const mark = NUMBER_MARK as unknown as number
  return { ...event, message: { ...event.message, id: mark, message_index: mark } }
}

function splitAtNumber (payloadHead: string): string[] {
  const pieces = payloadHead.split(NUMBER_MARK_JSON)
  if (pieces.length !== 3) throw new Error(`a numbered message frame has ${pieces.length - 1} number marks, not 2`)
  return pieces
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
