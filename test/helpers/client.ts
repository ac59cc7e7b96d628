import WebSocket from 'ws'

/* Frames in tests are read loosely: the wire is JSON and the assertions say what matters. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Frame = { type: string, data: any, stream?: string, offset?: number }

export interface Position { epoch: string, offset: number }

interface Waiter {
  match: (frame: Frame) => boolean
  resolve: (frame: Frame) => void
}

/**
 * A real WebSocket client that records every frame; waits are event-driven with a bound.
 */
export class TestClient {
  readonly frames: Frame[] = []
  readonly #waiters = new Set<Waiter>()
  readonly closed: Promise<{ code: number, reason: string }>
  readonly opened: Promise<void>

  constructor (readonly socket: WebSocket, readonly name: string) {
    socket.on('message', (raw, isBinary) => {
      const frame = JSON.parse(raw.toString()) as Frame
      if (isBinary) frame.type = `BINARY:${frame.type}`
      this.frames.push(frame)
      for (const waiter of this.#waiters) {
        if (waiter.match(frame)) {
          this.#waiters.delete(waiter)
          waiter.resolve(frame)
        }
      }
    })
    this.closed = new Promise((resolve) => {
      socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() }))
    })
    this.opened = new Promise((resolve, reject) => {
      socket.once('open', () => resolve())
      socket.once('error', reject)
    })
  }

  /** Resolves with the first frame (already received or coming) that matches; fails after `ms`. */
  async waitFor (match: (frame: Frame) => boolean, ms = 3000, what = 'frame'): Promise<Frame> {
    const seen = this.frames.find(match)
    if (seen !== undefined) return seen
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter)
        reject(new Error(`${this.name}: no ${what} within ${ms} ms; got ${JSON.stringify(this.frames.map((f) => f.type))}`))
      }, ms)
      const waiter: Waiter = { match, resolve: (frame) => { clearTimeout(timer); resolve(frame) } }
      this.#waiters.add(waiter)
    })
  }

  async next (type: string, ms = 3000): Promise<Frame> {
    return await this.waitFor((frame) => frame.type === type, ms, type)
  }

  ofType (type: string): Frame[] {
    return this.frames.filter((frame) => frame.type === type)
  }

  /** Where this client stands per stream: its last `connected.streams`, moved on by each durable frame. */
  positions (): Record<string, Position> {
    const positions: Record<string, Position> = {}
    for (const frame of this.frames) {
      if (frame.type === 'connected') Object.assign(positions, structuredClone(frame.data.streams ?? {}))
      else if (frame.stream !== undefined && frame.offset !== undefined) {
        const position = positions[frame.stream]
        if (position !== undefined) position.offset = frame.offset
      }
    }
    return positions
  }

  /** The `since` query parameter that recovers what this client missed. */
  since (): string {
    return Buffer.from(JSON.stringify(this.positions())).toString('base64url')
  }

  send (frame: unknown): void {
    this.socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame))
  }

  close (): void {
    this.socket.close()
  }
}

export interface ConnectOptions {
  token?: string
  bearer?: string
  origin?: string
  query?: Record<string, string>
  name?: string
}

export function connect (baseUrl: string, path: '/chat' | '/broadcast', options: ConnectOptions = {}): TestClient {
  const url = new URL(path, baseUrl)
  if (options.token !== undefined) url.searchParams.set('token', options.token)
  for (const [key, value] of Object.entries(options.query ?? {})) url.searchParams.set(key, value)
  const headers: Record<string, string> = {}
  if (options.bearer !== undefined) headers.authorization = `Bearer ${options.bearer}`
  const socket = new WebSocket(url, { headers, ...(options.origin === undefined ? {} : { origin: options.origin }) })
  return new TestClient(socket, options.name ?? path)
}

/** Connects and waits for the `connected` frame. */
export async function join (baseUrl: string, path: '/chat' | '/broadcast', options: ConnectOptions = {}): Promise<TestClient> {
  const client = connect(baseUrl, path, options)
  await client.next('connected')
  return client
}

export function closeAll (...clients: TestClient[]): void {
  for (const client of clients) client.socket.terminate()
}
