import { randomBytes } from 'node:crypto'

/**
 * How events cross nodes: bytes published to a topic reach every node subscribed to it, in publish
 * order per publisher. Every topic is also a stream (SPEC Recovery): a durable event is appended to the
 * streams of its topics and published in one atomic step, numbered by an offset per stream, and kept for
 * a while so a node or a client that missed it can read it back. Two implementations: in-memory (one
 * node) and Redis (a cluster).
 */
export type PacketHandler = (topic: string, packet: Buffer) => void
export type BusState = 'ready' | 'down'

/** Where a stream stands: its epoch and the offset of its newest event (0: none yet). */
export interface StreamPosition {
  epoch: string
  offset: number
}

/** One durable event for one stream: the routing header and payload heads of packet.ts DurableParts. */
export interface Append {
  topic: string
  routingHead: string
  /** Index into DurableEvent.payloads (deliveries to several topics share one payload). */
  payload: number
}

export interface DurableEvent {
  /**
   * Frame JSON heads. With `numbered`, each is split where the message's `id` and `message_index` go:
   * the store joins the pieces with the number it takes from the chat's counter, in the same step.
   */
  payloads: string[][]
  appends: Append[]
  /** A message the relay makes (standalone mode): the chat whose counter numbers it. */
  numbered?: { chatUuid: string }
  /**
   * Published at most once under this token (an ingest request's Idempotency-Key and route), for as
   * long as the token is kept: an append that timed out and landed late is not published again by
   * the retry, and a batch retried after a 503 publishes only the events it had not.
   */
  once?: { token: string, ttlSeconds: number }
}

export interface StreamRead {
  /** The stream's position when it was read (the epoch made now if it had none). */
  position: StreamPosition
  /** Packets after the requested offset, in offset order, up to the limit. */
  packets: Buffer[]
  /** Offsets of `packets`. */
  offsets: number[]
}

export interface ReadOptions {
  /** Read the events after this offset... */
  after: number
  /** ...up to this one (inclusive; default: the newest)... */
  upTo?: number
  /** ...at most this many, newest first when `newest` (history), else oldest first. */
  limit: number
  newest?: boolean
  /** The offset this reader already holds: a stream found below it lost events and gets a new epoch. */
  known?: number
}

export interface Bus {
  readonly kind: 'memory' | 'redis'
  /** True while a publish can succeed. */
  isReady: () => boolean
  /**
   * True once every node had time to resubscribe since this one's last reconnect. An ephemeral event that
   * must reach every node (presence: it is retried until taken) waits for it: pub/sub keeps nothing.
   */
  canAnnounce: () => boolean
  /**
   * True while a durable event can be appended and acknowledged. With history that holds while this
   * node's own subscription is being restored: its readers repair what they miss from the streams.
   */
  canAppend: () => boolean
  /** Ephemeral: resolves once the bus accepted the packet; rejects with BusUnavailableError otherwise. */
  publish: (topic: string, packet: Buffer) => Promise<void>
  /**
   * Durable: numbers the event in each of its streams, keeps it, and publishes it, all or nothing.
   * Resolves with the message number when `numbered` (else 0), ALREADY_APPENDED when `once` was used
   * before; rejects with BusUnavailableError.
   */
  append: (event: DurableEvent) => Promise<number>
  /** The positions of streams, making an epoch for a stream that has none. */
  positions: (topics: string[]) => Promise<StreamPosition[]>
  read: (topic: string, options: ReadOptions) => Promise<StreamRead>
  subscribe: (topic: string) => Promise<void>
  unsubscribe: (topic: string) => Promise<void>
  /** The one receiver of every packet on a subscribed topic (the hub). */
  onPacket: (handler: PacketHandler) => void
  /** `ready` also after every resubscription: what was published meanwhile is only in the streams. */
  onStateChange: (listener: (state: BusState) => void) => void
  close: () => Promise<void>
}

/** Retention of the streams: SPEC Recovery's HISTORY_SIZE and HISTORY_TTL_S, and how long positions live. */
export interface StreamRetention {
  /** Events kept per stream; 0 keeps none (recovery off, offsets still number events). */
  size: number
  /** History of a stream with no new event expires after this. */
  ttlSeconds: number
  /** Epoch and top offset outlive the history: a quiet stream still recovers a client that missed nothing. */
  positionTtlSeconds: number
}

export const defaultRetention: StreamRetention = { size: 100, ttlSeconds: 600, positionTtlSeconds: 7 * 24 * 3600 }

/** What Bus.append answers for an event whose `once` token was already published. */
export const ALREADY_APPENDED = -1

/** A fresh epoch: random, in EPOCH_PATTERN's characters. */
export function newEpoch (): string {
  return randomBytes(6).readUIntBE(0, 6).toString(36)
}
