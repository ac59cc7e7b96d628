import type { Clock } from './types.js'

/**
 * Browsers cannot see WebSocket pings: after `intervalMs` with nothing received, `ping()`; nothing at all
 * within `timeoutMs` after that, `dead()`. Any frame counts (`heard`), not only the pong.
 */
export class Liveness {
  #lastHeardAt = 0
  #idleTimer: unknown
  #pongTimer: unknown

  constructor (
    readonly clock: Clock,
    readonly intervalMs: number,
    readonly timeoutMs: number,
    readonly ping: () => void,
    readonly dead: () => void
  ) {}

  start (): void {
    this.stop()
    this.heard()
    this.#arm(this.intervalMs)
  }

  heard (): void {
    this.#lastHeardAt = this.clock.now()
    this.#pongTimer = this.#clear(this.#pongTimer)
  }

  stop (): void {
    this.#idleTimer = this.#clear(this.#idleTimer)
    this.#pongTimer = this.#clear(this.#pongTimer)
  }

  #arm (ms: number): void {
    this.#idleTimer = this.clock.setTimeout(() => { this.#idle() }, ms)
  }

  #idle (): void {
    const quiet = this.clock.now() - this.#lastHeardAt
    // Frames came meanwhile: wait for the rest of the interval (no timer reset per frame).
    if (quiet < this.intervalMs) return this.#arm(this.intervalMs - quiet)
    this.ping()
    this.#pongTimer ??= this.clock.setTimeout(() => {
      this.#pongTimer = undefined
      this.dead()
    }, this.timeoutMs)
    this.#arm(this.intervalMs)
  }

  #clear (handle: unknown): undefined {
    if (handle !== undefined) this.clock.clearTimeout(handle)
    return undefined
  }
}
