import type { Bus, StreamPosition } from '../stores/bus.js'
import type { Connection, RecoveryRequest } from './connection.js'
import type { Hub, StreamPositions } from './hub.js'
import type { Metrics } from '../metrics.js'
import { EPOCH_PATTERN, decodePacket, type Outbound } from '../protocol/packet.js'
import { admits, Topic } from '../protocol/routing.js'
import { nestedDeeperThan } from '../protocol/json.js'
import { ErrorCode } from '../protocol/protocol.js'
import { sendPaced } from './paced.js'
import { FrameHold } from './writer.js'

export interface RecoveryOptions {
  /** REPLAY_LIMIT: more missed events than this on one stream is not recovered. */
  replayLimit: number
  /** HISTORY_SIZE: the most `history` may ask for. */
  historySize: number
}

/** What a socket is sent after `connected` and before live frames. */
export interface Replay {
  /** `connected.streams`: where the socket stands in each stream once the replay is sent. */
  streams: StreamPositions
  /** `connected.recovered`, when the client sent `since`. */
  recovered?: boolean
  frames: Outbound[]
  /** Held live frames of a stream up to this offset were already received by the client (it was ahead of this node). */
  skipUpTo: Map<string, number>
}

/** Longest `since` accepted (base64url): a console reads a few dozen streams at most. */
const MAX_SINCE_CHARS = 8192
const MAX_SINCE_STREAMS = 256

/** Parses `since` and `history` of the upgrade URL; undefined when neither was given. */
export function parseRecovery (since: string | undefined, history: string | undefined, historySize: number): RecoveryRequest | undefined {
  if (since === undefined && history === undefined) return undefined
  const request: RecoveryRequest = {}
  if (since !== undefined) {
    const positions = parseSince(since)
    if (typeof positions === 'string') request.invalid = `since: ${positions}`
    request.since = typeof positions === 'string' ? {} : positions
  }
  if (history !== undefined) {
    const count = /^\d{1,6}$/.test(history) ? Number(history) : NaN
    if (Number.isInteger(count) && count <= historySize) request.history = count
    else request.invalid ??= `history must be an integer from 0 to ${historySize}`
  }
  return request
}

function parseSince (since: string): Record<string, StreamPosition> | string {
  if (since.length > MAX_SINCE_CHARS || !/^[A-Za-z0-9_-]*={0,2}$/.test(since)) return 'not base64url, or too long'
  const json = Buffer.from(since, 'base64url').toString('utf8')
  if (nestedDeeperThan(json, 2)) return 'not an object of {epoch, offset}'
  let parsed: unknown
  try {
    parsed = JSON.parse(json)
  } catch {
    return 'not JSON'
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return 'not an object of {epoch, offset}'
  const entries = Object.entries(parsed as Record<string, unknown>)
  if (entries.length > MAX_SINCE_STREAMS) return `more than ${MAX_SINCE_STREAMS} streams`
  const positions: Record<string, StreamPosition> = Object.create(null) as Record<string, StreamPosition>
  for (const [stream, value] of entries) {
    const { epoch, offset } = (value ?? {}) as { epoch?: unknown, offset?: unknown }
    if (typeof epoch !== 'string' || !EPOCH_PATTERN.test(epoch) || typeof offset !== 'number' || !Number.isSafeInteger(offset) || offset < 0) {
      return `stream ${JSON.stringify(stream.slice(0, 40))} needs {epoch, offset}`
    }
    positions[stream] = { epoch, offset }
  }
  return positions
}

const NOT_RECOVERED = Symbol('not recovered')
/** Live frames a recovering socket may have waiting behind its replay (at least; 4 send buffers if more). */
const HOLD_MIN_BYTES = 16 * 1024 * 1024

/**
 * What a socket missed (`since`) or the chat's last events (`history`), read from the streams and
 * filtered by the routing table like live frames: a customer is never replayed a note.
 */
export class Recovery {
  constructor (readonly hub: Hub, readonly bus: Bus, readonly metrics: Metrics, readonly options: RecoveryOptions) {}

  /**
   * For a socket that asked for `since` or `history`, just indexed at `positions`: live frames wait in a
   * hold while the missed ones are read; then `welcome` sends `connected` (false: the socket went), the
   * replay follows at the client's pace, then what the hold gathered meanwhile, until it stays empty.
   */
  async run (connection: Connection, positions: StreamPositions, welcome: (replay: Replay) => boolean): Promise<void> {
    const hold = connection.hold = new FrameHold(Math.max(4 * connection.limits.maxBufferedBytes, HOLD_MIN_BYTES))
    const request = connection.recovery ?? {}
    connection.recovery = undefined
    const replay = await this.replay(connection, positions, request)
    if (hold.discard || connection.hold !== hold || !welcome(replay)) return
    if (request.invalid !== undefined) connection.sendFrame({ type: 'error', data: { code: ErrorCode.invalidPayload, message: request.invalid } })
    let frames = replay.frames
    do {
      if (!await sendPaced(connection, frames)) return
      frames = hold.frames.splice(0).filter((frame) => {
        const skipUpTo = frame.stream === undefined ? undefined : replay.skipUpTo.get(frame.stream)
        return skipUpTo === undefined || (frame.offset as number) > skipUpTo
      })
    } while (frames.length > 0)
    if (connection.hold === hold) connection.hold = undefined
  }

  async replay (connection: Connection, positions: StreamPositions, request: RecoveryRequest): Promise<Replay> {
    const replay: Replay = { streams: { ...positions }, frames: [], skipUpTo: new Map() }
    if (request.since !== undefined) {
      let frames: Outbound[] | typeof NOT_RECOVERED
      try {
        frames = request.invalid === undefined ? await this.#missed(connection, positions, request.since, replay) : NOT_RECOVERED
      } catch {
        frames = NOT_RECOVERED
      }
      replay.recovered = frames !== NOT_RECOVERED
      if (frames !== NOT_RECOVERED) replay.frames = frames
      else {
        replay.streams = { ...positions }
        replay.skipUpTo.clear()
      }
      this.metrics.recoveries.inc({ outcome: replay.recovered ? 'recovered' : 'not_recovered' })
    } else if (request.history !== undefined && request.history > 0) {
      replay.frames = await this.#history(connection, positions, request.history).catch(() => [])
    }
    this.metrics.replayedFrames.inc(replay.frames.length)
    return replay
  }

  async #missed (connection: Connection, positions: StreamPositions, since: Record<string, StreamPosition>, replay: Replay): Promise<Outbound[] | typeof NOT_RECOVERED> {
    const reads: Array<{ topic: string, after: number, upTo: number }> = []
    for (const [topic, position] of Object.entries(positions)) {
      const client = since[topic]
      // A stream the client holds no position in: it starts at the top.
      if (client === undefined) continue
      if (client.epoch !== position.epoch) return NOT_RECOVERED
      if (client.offset > position.offset) {
        // The client is ahead of this node (its last events are still on their way here): wait for them.
        if (!await this.hub.streams.reach(topic, client.offset)) return NOT_RECOVERED
        replay.skipUpTo.set(topic, client.offset)
        replay.streams[topic] = { epoch: position.epoch, offset: client.offset }
        continue
      }
      if (position.offset - client.offset > this.options.replayLimit) return NOT_RECOVERED
      if (position.offset > client.offset) reads.push({ topic, after: client.offset, upTo: position.offset })
    }
    const frames: Outbound[] = []
    const results = await Promise.all(reads.map(async ({ topic, after, upTo }) =>
      await this.bus.read(topic, { after, upTo, limit: upTo - after })))
    for (let index = 0; index < reads.length; index++) {
      const { topic, after, upTo } = reads[index] as typeof reads[number]
      const { position, offsets, packets } = results[index] as (typeof results)[number]
      const complete = position.epoch === positions[topic]?.epoch && offsets.length === upTo - after && offsets[0] === after + 1
      if (!complete) return NOT_RECOVERED
      for (const bytes of packets) {
        const packet = decodePacket(bytes)
        if (admits(packet.audience, connection.attributes)) frames.push(packet)
      }
    }
    return frames
  }

  async #history (connection: Connection, positions: StreamPositions, count: number): Promise<Outbound[]> {
    const chatUuid = connection.attributes.chatUuid
    if (chatUuid === undefined) return []
    const topic = Topic.chat(chatUuid)
    const position = positions[topic]
    if (position === undefined || position.offset === 0) return []
    const read = await this.bus.read(topic, { after: 0, upTo: position.offset, limit: this.options.historySize, newest: true })
    if (read.position.epoch !== position.epoch) return []
    const frames: Outbound[] = []
    for (const bytes of read.packets) {
      const packet = decodePacket(bytes)
      if (admits(packet.audience, connection.attributes)) frames.push(packet)
    }
    return frames.slice(-count)
  }
}
