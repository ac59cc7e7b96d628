import type { Clock, NetworkEvents, WebSocketLike } from '../../client/src/index.js'

/** Timers on a hand-moved clock: `advance` runs what falls due, in order. */
export class FakeClock implements Clock {
  time = 1_000_000
  readonly #timers = new Map<number, { at: number, callback: () => void }>()
  #next = 0

  now (): number {
    return this.time
  }

  setTimeout (callback: () => void, ms: number): number {
    const handle = ++this.#next
    this.#timers.set(handle, { at: this.time + ms, callback })
    return handle
  }

  clearTimeout (handle: unknown): void {
    this.#timers.delete(handle as number)
  }

  /** Moves time on by `ms`, firing each due timer at its own time (promises settle in between). */
  async advance (ms: number): Promise<void> {
    const end = this.time + ms
    for (;;) {
      let due: [number, { at: number, callback: () => void }] | undefined
      for (const entry of this.#timers) if (entry[1].at <= end && (due === undefined || entry[1].at < due[1].at)) due = entry
      if (due === undefined) break
      this.#timers.delete(due[0])
      this.time = due[1].at
      due[1].callback()
      await settle()
    }
    this.time = end
    await settle()
  }

  pending (): number {
    return this.#timers.size
  }
}

/** Lets promise continuations (an async getToken) run. */
export async function settle (): Promise<void> {
  await new Promise((resolve) => setImmediate(resolve))
}

/** A socket the test plays the relay for. */
export class FakeSocket implements WebSocketLike {
  readyState = 0
  onopen: WebSocketLike['onopen'] = null
  onmessage: WebSocketLike['onmessage'] = null
  onclose: WebSocketLike['onclose'] = null
  onerror: WebSocketLike['onerror'] = null
  readonly sent: Array<{ type: string, data: Record<string, unknown> }> = []
  closedWith: { code?: number, reason?: string } | undefined

  constructor (readonly url: string) {}

  get query (): URLSearchParams {
    return new URL(this.url).searchParams
  }

  send (data: string): void {
    this.sent.push(JSON.parse(data) as { type: string, data: Record<string, unknown> })
  }

  close (code?: number, reason?: string): void {
    this.closedWith = { code, reason }
    this.readyState = 3
  }

  /** Opens and sends `connected` with these stream positions. */
  welcome (streams: Record<string, { epoch: string, offset: number }> = {}, extra: Record<string, unknown> = {}): void {
    this.readyState = 1
    this.onopen?.({})
    this.receive({ type: 'connected', data: { connection_id: 'c', user: { id: 1 }, streams, ...extra } })
  }

  receive (frame: unknown): void {
    this.onmessage?.({ data: JSON.stringify(frame) })
  }

  /** The relay closes it. */
  drop (code: number, reason = ''): void {
    this.readyState = 3
    this.onclose?.({ code, reason })
  }

  sentOfType (type: string): Array<Record<string, unknown>> {
    return this.sent.filter((frame) => frame.type === type).map((frame) => frame.data)
  }
}

/** A WebSocket constructor that records each socket it makes. */
export function fakeSockets (): { sockets: FakeSocket[], WebSocket: new (url: string) => FakeSocket, last: () => FakeSocket } {
  const sockets: FakeSocket[] = []
  class Recorded extends FakeSocket {
    constructor (url: string) {
      super(url)
      sockets.push(this)
    }
  }
  return {
    sockets,
    WebSocket: Recorded,
    last: () => {
      const socket = sockets.at(-1)
      if (socket === undefined) throw new Error('no socket made yet')
      return socket
    }
  }
}

/** `online`/`offline` the test fires. */
export class FakeNetwork implements NetworkEvents {
  readonly #target = new EventTarget()
  addEventListener (type: 'online' | 'offline', listener: () => void): void {
    this.#target.addEventListener(type, listener)
  }

  removeEventListener (type: 'online' | 'offline', listener: () => void): void {
    this.#target.removeEventListener(type, listener)
  }

  fire (type: 'online' | 'offline'): void {
    this.#target.dispatchEvent(new Event(type))
  }
}

/** A durable frame of stream `s` (what `connected` lists as `{s: {epoch: 'e1', ...}}`). */
export function durable (offset: number, id = offset, stream = 's'): unknown {
  return { type: 'message_added', data: { message: { id, type: 'standard', chat: { uuid: 'c1' } } }, stream, offset }
}
