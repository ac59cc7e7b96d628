import type { Clock } from './types.js'

export interface TypingData { text?: string, stopped: boolean }

/** At most one typing frame per interval (the relay relays at most 2 a second per user and chat). */
export const TYPING_INTERVAL_MS = 2000
/** No keystroke for this long: `stopped`. */
export const TYPING_IDLE_MS = 3000
/** The relay refuses longer typing text. */
const MAX_TYPING_TEXT = 2000

/**
 * The typing indicator from keystrokes: the first at once, then at most one frame per interval carrying
 * the latest draft, `stopped` after an idle pause or when the message is sent.
 */
export class TypingThrottle {
  #active = false
  #lastSentAt = -Infinity
  #draft: string | undefined
  #trailingTimer: unknown
  #idleTimer: unknown

  /** `send` returns false when the frame could not be sent (not connected). */
  constructor (readonly send: (data: TypingData) => boolean, readonly clock: Clock) {}

  input (text: string): void {
    if (text === '') return this.stop()
    this.#idleTimer = this.#clear(this.#idleTimer)
    this.#idleTimer = this.clock.setTimeout(() => {
      this.#idleTimer = undefined
      this.stop()
    }, TYPING_IDLE_MS)
    const wait = this.#lastSentAt + TYPING_INTERVAL_MS - this.clock.now()
    if (wait <= 0) return this.#sendDraft(text)
    this.#draft = text
    this.#trailingTimer ??= this.clock.setTimeout(() => {
      this.#trailingTimer = undefined
      if (this.#draft !== undefined) this.#sendDraft(this.#draft)
    }, wait)
  }

  /** Sends `stopped` if a typing frame went out since the last stop. */
  stop (): void {
    this.#draft = undefined
    this.#trailingTimer = this.#clear(this.#trailingTimer)
    this.#idleTimer = this.#clear(this.#idleTimer)
    if (!this.#active) return
    this.#active = false
    this.send({ stopped: true })
  }

  /** Forget everything without sending (the connection stopped). */
  dispose (): void {
    this.#active = false
    this.#draft = undefined
    this.#trailingTimer = this.#clear(this.#trailingTimer)
    this.#idleTimer = this.#clear(this.#idleTimer)
  }

  #sendDraft (text: string): void {
    this.#draft = undefined
    this.#trailingTimer = this.#clear(this.#trailingTimer)
    if (!this.send({ text: text.slice(0, MAX_TYPING_TEXT), stopped: false })) return
    this.#active = true
    this.#lastSentAt = this.clock.now()
  }

  #clear (handle: unknown): undefined {
    if (handle !== undefined) this.clock.clearTimeout(handle)
    return undefined
  }
}
