/**
 * What the SDK does after a close, by code (the table in client/README.md), and the full-jitter
 * exponential backoff it waits with.
 */

export type CloseDecision =
  | { action: 'stop' }
  /** Call getToken() again and reconnect at once. */
  | { action: 'refresh_token' }
  /** Wait `backoff.next()`. */
  | { action: 'backoff' }
  /** Wait the longest backoff. */
  | { action: 'longest' }
  /** The server restarts: reconnect after a short random delay (elsewhere, through the balancer). */
  | { action: 'restart' }

/** Closes the SDK itself makes: a silent connection (no `connected`, no answer to a ping) or going offline. */
export const CLIENT_TIMEOUT = 4000

/** `badTokens`: 4401 closes since the last successful `connected`. */
export function closeDecision (code: number | undefined, badTokens: number): CloseDecision {
  switch (code) {
    case 4401: return badTokens >= 1 ? { action: 'stop' } : { action: 'refresh_token' }
    case 4403:
    case 1009:
      return { action: 'stop' }
    case 4429: return { action: 'longest' }
    case 1012: return { action: 'restart' }
    default: return { action: 'backoff' }
  }
}

/** Upper bound of the random delay after a 1012. */
const RESTART_SPREAD_MS = 1000

export class Backoff {
  #attempt = 0

  constructor (readonly minMs: number, readonly maxMs: number, readonly random: () => number) {}

  get attempt (): number {
    return this.#attempt
  }

  /** Full jitter: uniform in [0, min(maxMs, minMs · 2^attempt)); each call is one more attempt. */
  next (): number {
    const ceiling = Math.min(this.maxMs, this.minMs * 2 ** Math.min(this.#attempt, 30))
    this.#attempt += 1
    return Math.floor(this.random() * ceiling)
  }

  longest (): number {
    this.#attempt += 1
    return this.maxMs
  }

  restart (): number {
    return Math.floor(this.random() * Math.min(RESTART_SPREAD_MS, this.maxMs))
  }

  reset (): void {
    this.#attempt = 0
  }

  /** The wait a decision asks for (undefined: stop). */
  delayFor (decision: CloseDecision): number | undefined {
    switch (decision.action) {
      case 'stop': return undefined
      case 'refresh_token': return 0
      case 'backoff': return this.next()
      case 'longest': return this.longest()
      case 'restart': return this.restart()
      default: {
        const unknownDecision: never = decision
        throw new Error(`unknown close decision ${JSON.stringify(unknownDecision)}`)
      }
    }
  }
}
