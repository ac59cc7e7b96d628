import type { Connection } from './connection.js'

/**
 * Sockets by the second their token expires, checked once a second: a socket does not outlive its
 * token by more than that, and an idle socket costs one set entry, not a timer of its own.
 */
export class ExpiryWheel {
  readonly #buckets = new Map<number, Set<Connection>>()
  readonly #timer: NodeJS.Timeout

  constructor (readonly expire: (connection: Connection) => void, tickMs = 1000) {
    this.#timer = setInterval(() => this.tick(), tickMs)
    this.#timer.unref()
  }

  add (connection: Connection): void {
    if (!Number.isFinite(connection.expiresAt)) return
    const second = Math.ceil(connection.expiresAt / 1000)
    let bucket = this.#buckets.get(second)
    if (bucket === undefined) {
      bucket = new Set()
      this.#buckets.set(second, bucket)
    }
    bucket.add(connection)
  }

  remove (connection: Connection): void {
    if (!Number.isFinite(connection.expiresAt)) return
    const second = Math.ceil(connection.expiresAt / 1000)
    const bucket = this.#buckets.get(second)
    if (bucket === undefined) return
    bucket.delete(connection)
    if (bucket.size === 0) this.#buckets.delete(second)
  }

  /** Expires every socket whose token's second has passed. */
  tick (now = Date.now()): void {
    const current = now / 1000
    for (const [second, bucket] of this.#buckets) {
      if (second > current) continue
      this.#buckets.delete(second)
      for (const connection of bucket) this.expire(connection)
    }
  }

  stop (): void {
    clearInterval(this.#timer)
    this.#buckets.clear()
  }
}
