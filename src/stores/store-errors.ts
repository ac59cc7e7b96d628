/**
 * A store (bus, presence, chat log, idempotency) could not do what was asked, now: Redis is down or slow,
 * or the bus is closed. Nothing was published; HTTP answers 503 with `Retry-After`, sockets get `unavailable`.
 */
export class StoreUnavailableError extends Error {
  override name = 'StoreUnavailableError'
  readonly code: string = 'STORE_UNAVAILABLE'
}

export class BusUnavailableError extends StoreUnavailableError {
  override name = 'BusUnavailableError'
  override readonly code = 'BUS_UNAVAILABLE'
}

export class PresenceUnavailableError extends StoreUnavailableError {
  override name = 'PresenceUnavailableError'
  override readonly code = 'PRESENCE_UNAVAILABLE'
}

export class ChatLogUnavailableError extends StoreUnavailableError {
  override name = 'ChatLogUnavailableError'
  override readonly code = 'CHAT_LOG_UNAVAILABLE'
}

export class IdempotencyUnavailableError extends StoreUnavailableError {
  override name = 'IdempotencyUnavailableError'
  override readonly code = 'IDEMPOTENCY_UNAVAILABLE'
}
