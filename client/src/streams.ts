import type { StreamPosition } from './types.js'

interface Tracked {
  /** Unknown for a stream `connected` did not list (not sent back in `since`). */
  epoch: string | undefined
  /** The last offset handed to the app, or where the socket started. */
  offset: number
  /** After a first connect with `history`: the next frame may be older than the start (history). */
  open: boolean
}

/**
 * Where the client stands per stream (SPEC Recovery): dedupes by (stream, offset) and never lets an
 * older offset through after a newer one. A gap is not waited for: the relay sends in order, and a
 * socket does not see every event of its streams (a note skipped for a customer).
 */
export class StreamTracker {
  readonly #streams = new Map<string, Tracked>()

  /**
   * On `connected`. Recovered: keep what the client holds (the replay follows, older than the top
   * `connected` shows) and start new streams at their top. Otherwise everything starts at the top;
   * with `history`, the history frames that follow are let through.
   */
  connected (streams: Record<string, StreamPosition>, recovered: boolean, history: boolean): void {
    const kept = new Map(this.#streams)
    this.#streams.clear()
    for (const [name, top] of Object.entries(streams)) {
      const held = kept.get(name)
      if (recovered && held !== undefined && held.epoch === top.epoch) {
        this.#streams.set(name, { epoch: held.epoch, offset: held.offset, open: false })
      } else {
        this.#streams.set(name, { epoch: top.epoch, offset: top.offset, open: history })
      }
    }
  }

  /** True when the frame is new: its offset is above the last one of its stream (or history opens it). */
  accept (stream: string, offset: number): boolean {
    const tracked = this.#streams.get(stream)
    if (tracked === undefined) {
      this.#streams.set(stream, { epoch: undefined, offset, open: false })
      return true
    }
    if (!tracked.open && offset <= tracked.offset) return false
    tracked.open = false
    tracked.offset = offset
    return true
  }

  positions (): Record<string, StreamPosition> {
    const positions: Record<string, StreamPosition> = {}
    for (const [name, { epoch, offset }] of this.#streams) {
      if (epoch !== undefined) positions[name] = { epoch, offset }
    }
    return positions
  }

  /** The `since` query value for a reconnect; undefined when there is nothing to recover from. */
  since (): string | undefined {
    const positions = this.positions()
    return Object.keys(positions).length === 0 ? undefined : encodeSince(positions)
  }
}

/** base64url of the JSON's UTF-8 bytes, without padding; btoa, not Buffer, so it runs in browsers. */
export function encodeSince (positions: Record<string, StreamPosition>): string {
  const bytes = new TextEncoder().encode(JSON.stringify(positions))
  let binary = ''
  for (const byte of bytes) binary += String.fromCharCode(byte)
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')
}
