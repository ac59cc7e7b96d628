import { RelayConnection } from './connection.js'
import type { ConsoleClient, ConsoleEvents, ConsoleOptions, ConsoleServerEvent } from './types.js'

const CONSOLE_EVENTS: ReadonlySet<ConsoleServerEvent> = new Set<ConsoleServerEvent>([
  'connected', 'message_added', 'message_updated', 'message_deleted', 'chat_updated', 'operator_updated',
  'typing_updated', 'global_updated', 'chat_notification', 'customer_presence', 'error'
])

/** An operator's console: every chat its token's `sources` admit (`/broadcast`). */
class ConsoleConnection extends RelayConnection<ConsoleEvents> implements ConsoleClient {
  constructor (options: ConsoleOptions) {
    super('/broadcast', options, CONSOLE_EVENTS)
  }
}

export function connectConsole (options: ConsoleOptions): ConsoleClient {
  return new ConsoleConnection(options).start()
}
