import type { WebSocket } from 'ws'
import type { Connection } from './connection.js'
import type { Metrics } from '../metrics.js'
import { CloseCode } from '../protocol/protocol.js'

export interface UpkeepLogger {
  info: (object: object, message: string) => void
  warn: (object: object, message: string) => void
}

/** The sockets to look after, and the presence goodbyes still in flight (a drain waits for them). */
export interface UpkeepSubjects {
  connections: () => Iterable<Connection>
  size: () => number
  goodbyes: () => Array<Promise<void>>
}

/** A drain closes one batch per slice of this length (fewer slices when there are fewer sockets). */
const DRAIN_SLICE_MS = 100
/** Longer than Connection's close grace: by then every socket is closed or cut. */
const SETTLE_BOUND_MS = 3000

/**
 * Liveness and shutdown of a node's sockets: a ping round terminates sockets that did not answer the
 * last one; a drain refuses new sockets and closes the open ones with 1012, spread over a window.
 */
export class SocketUpkeep {
  #draining = false
  readonly #pingTimer: NodeJS.Timeout

  constructor (readonly subjects: UpkeepSubjects, readonly metrics: Metrics, readonly log: UpkeepLogger, pingIntervalMs: number) {
    this.#pingTimer = setInterval(() => this.pingAll(), pingIntervalMs)
    this.#pingTimer.unref()
  }

  get draining (): boolean {
    return this.#draining
  }

  /** Terminates sockets that did not answer the previous ping, then pings the rest. */
  pingAll (): void {
    for (const connection of this.subjects.connections()) {
      if (!connection.alive) {
        this.log.info({ connectionId: connection.id }, 'socket did not answer ping: terminated')
        connection.socket.terminate()
        continue
      }
      connection.alive = false
      connection.socket.ping()
    }
  }

  /**
   * Refuses new sockets (1012) and closes the open ones with 1012 in batches, one per time slice, spread
   * over `windowMs` so that clients reconnect elsewhere without a thundering herd. Resolves once they are
   * closed and their presence goodbyes published (or after a bound).
   */
  async drain (windowMs: number): Promise<void> {
    this.#draining = true
    this.metrics.draining.set(1)
    const open = [...this.subjects.connections()]
    const slices = Math.max(1, Math.min(open.length, Math.floor(windowMs / DRAIN_SLICE_MS)))
    const batch = Math.ceil(open.length / slices)
    this.log.info({ sockets: open.length, windowMs, slices }, 'drain started')
    for (let slice = 0; slice * batch < open.length; slice++) {
      if (slice > 0) await sleep(windowMs / slices)
      for (const connection of open.slice(slice * batch, (slice + 1) * batch)) {
        connection.close(CloseCode.restarting, 'server restarting')
      }
    }
    await this.settle(open)
    this.log.info({ sockets: open.length }, 'drain done')
  }

  /** Closes every socket left with 1012 (no spreading) and waits for them, like the end of a drain. */
  async close (): Promise<void> {
    this.#draining = true
    clearInterval(this.#pingTimer)
    const open = [...this.subjects.connections()]
    for (const connection of open) connection.close(CloseCode.restarting, 'server restarting')
    await this.settle(open)
  }

  /** Waits until the sockets are closed (Connection cuts a silent peer) and the goodbyes are out, bounded. */
  private async settle (connections: Connection[]): Promise<void> {
    const settled = Promise.all(connections.map(async (connection) => await closedSocket(connection.socket)))
      .then(async () => await Promise.allSettled(this.subjects.goodbyes()))
      .then(() => true)
    if (!await within(settled, SETTLE_BOUND_MS)) {
      this.log.warn({ sockets: this.subjects.size(), goodbyes: this.subjects.goodbyes().length }, `sockets or goodbyes still pending after ${SETTLE_BOUND_MS} ms`)
    }
  }
}

async function sleep (ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms))
}

async function closedSocket (socket: WebSocket): Promise<void> {
  if (socket.readyState === socket.CLOSED) return
  await new Promise((resolve) => socket.once('close', resolve))
}

/** True when `promise` resolved within `ms`; the timer never outlives the wait. */
async function within (promise: Promise<boolean>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), ms) })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}
