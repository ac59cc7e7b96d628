/**
 * A store (bus, presence, chat log, idempotency) could not do what was asked, now: Redis is down or slow,
 * or the bus is closed. Nothing was published; HTTP answers 503 with `Retry-After`, sockets get `unavailable`.
 * Each store has its own subclass; its name is the class's, its code says which store.
 */
export class StoreUnavailableError extends Error {
  readonly code: string = 'STORE_UNAVAILABLE'

  constructor (message: string) {
    super(message)
    this.name = new.target.name
  }
}

export class BusUnavailableError extends StoreUnavailableError { override readonly code = 'BUS_UNAVAILABLE' }
export class PresenceUnavailableError extends StoreUnavailableError { override readonly code = 'PRESENCE_UNAVAILABLE' }
export class ChatLogUnavailableError extends StoreUnavailableError { override readonly code = 'CHAT_LOG_UNAVAILABLE' }
export class IdempotencyUnavailableError extends StoreUnavailableError { override readonly code = 'IDEMPOTENCY_UNAVAILABLE' }
