import type { Connection } from './connection.js'

/** The sockets under one key: a single one as is (the common case), several in a Set. */
export type Sockets = Connection | Set<Connection>

/**
 * Sockets by key (chat room, operator id, widget). A key with one socket, like an operator with one
 * console, holds it directly: a Set per key would make every idle connection heavier (BENCHMARKS.md).
 */
export class SocketIndex {
  readonly #entries = new Map<string, Sockets>()
  #size = 0

  /** How many sockets, over every key. */
  get size (): number {
    return this.#size
  }

  get (key: string): Sockets | undefined {
    return this.#entries.get(key)
  }

  add (key: string, connection: Connection): void {
    const entry = this.#entries.get(key)
    if (entry === undefined) {
      this.#entries.set(key, connection)
    } else if (entry instanceof Set) {
      if (entry.has(connection)) return
      entry.add(connection)
    } else {
      if (entry === connection) return
      this.#entries.set(key, new Set([entry, connection]))
    }
    this.#size += 1
  }

  /** False when the socket was not under that key. */
  delete (key: string, connection: Connection): boolean {
    const entry = this.#entries.get(key)
    if (entry === undefined) return false
    if (entry instanceof Set) {
      if (!entry.delete(connection)) return false
      const [last] = entry
      if (entry.size === 1 && last !== undefined) this.#entries.set(key, last)
    } else {
      if (entry !== connection) return false
      this.#entries.delete(key)
    }
    this.#size -= 1
    return true
  }

  * values (): Iterable<Connection> {
    for (const entry of this.#entries.values()) {
      if (entry instanceof Set) yield * entry
      else yield entry
    }
  }
}
