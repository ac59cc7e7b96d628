import WebSocket from 'ws'
import type { ChatClient, ChatEvents, ConsoleClient, ConsoleEvents, RelayClient } from '../../client/src/index.js'
import type { Tap } from './relay.js'

/**
 * The `ws` class for the SDK, recording every socket it opens (so a test can cut one) and sending
 * attempt n to node n mod nodes (so a reconnect lands on another node).
 */
export function routedWebSocket (nodeUrls: string[]): { WebSocket: new (url: string) => WebSocket, sockets: WebSocket[] } {
  const sockets: WebSocket[] = []
  class Routed extends WebSocket {
    constructor (url: string) {
      const target = new URL(url)
      target.host = new URL(nodeUrls[sockets.length % nodeUrls.length] as string).host
      super(target)
      sockets.push(this)
    }
  }
  return { WebSocket: Routed, sockets }
}

type AnyClient = ChatClient | ConsoleClient
type EventsOf<C extends AnyClient> = C extends ChatClient ? ChatEvents : ConsoleEvents

/** Resolves with the first `event` whose data matches; fails after `ms`. */
export async function nextEvent<C extends AnyClient, K extends keyof EventsOf<C> & string> (
  client: C, event: K, match: (data: EventsOf<C>[K]) => boolean = () => true, ms = 5000
): Promise<EventsOf<C>[K]> {
  // The conditional type is not resolved inside a generic function; C's own `on` is this one.
  const typed = client as unknown as RelayClient<EventsOf<C>>
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off()
      reject(new Error(`no ${event} within ${ms} ms`))
    }, ms)
    const off = typed.on(event, (data) => {
      if (!match(data)) return
      clearTimeout(timer)
      off()
      resolve(data)
    })
  })
}

/** Resolves once the client is connected (at once if it is). */
export async function connected (client: AnyClient, ms = 5000): Promise<void> {
  if (client.state === 'connected') return
  await nextEvent(client, 'state', (change) => change.state === 'connected', ms)
}

/** Closes the clients when the test ends (before its relays, which were started earlier). */
export function closeWhenDone (t: Tap, ...clients: Array<{ close: () => void }>): void {
  t.teardown(() => { for (const client of clients) client.close() })
}

/** Resolves when `done()` is true, checked after each `event`; fails after `ms` with `describe()`. */
export async function until<C extends AnyClient, K extends keyof EventsOf<C> & string> (
  client: C, event: K, done: () => boolean, ms: number, describe: () => string
): Promise<void> {
  if (done()) return
  await nextEvent(client, event, () => done(), ms).catch(() => { throw new Error(describe()) })
}
