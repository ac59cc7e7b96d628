import type { RawData } from 'ws'
import { Compile, type Validator } from 'typebox/compile'
import type { ClientEvents } from '../client-events.js'
import type { Connection } from './connection.js'
import type { HubLogger } from './hub.js'
import { nestedDeeperThan, preview } from '../protocol/json.js'
import type { Metrics } from '../metrics.js'
import { clientFrames, CloseCode, ErrorCode, type ClientEventType, type ClientFrame } from '../protocol/protocol.js'

const validators = new Map<string, Validator>(
  Object.entries(clientFrames).map(([type, schema]) => [type, Compile(schema)])
)
const KNOWN_TYPES = Object.keys(clientFrames).join(', ')

function textOf (raw: RawData): string {
  if (Buffer.isBuffer(raw)) return raw.toString('utf8')
  return (Array.isArray(raw) ? Buffer.concat(raw) : Buffer.from(raw)).toString('utf8')
}

export interface FrameLimits {
  maxJsonDepth: number
  /** Client events of one socket waiting their turn; the next frame is refused as rate_limited. */
  queueMax: number
}

/** A socket's client events in the order it sent them, and how many wait. */
interface EventQueue {
  tail: Promise<void>
  waiting: number
}

/**
 * Everything between a client's raw frame and a client event: rate limit, JSON, type, schema. A bad frame
 * is answered with an `error` frame and the socket stays usable, until abuse closes it with 4429. Nothing
 * here throws into the ws listener: an unexpected error is an `internal_error` frame and a strike.
 */
export class FrameHandler {
  readonly #queues = new WeakMap<Connection, EventQueue>()

  constructor (
    readonly clientEvents: ClientEvents,
    readonly metrics: Metrics,
    readonly log: HubLogger,
    readonly limits: FrameLimits
  ) {}

  onMessage (connection: Connection, raw: RawData, isBinary: boolean): void {
    try {
      this.handleFrame(connection, raw, isBinary)
    } catch (error) {
      this.log.error({ err: error, connectionId: connection.id }, 'client frame failed')
      this.reject(connection, 'invalid', ErrorCode.internal, 'frame could not be handled')
    }
  }

  /** Resolves once every queued event of the socket has been handled. */
  async settled (connection: Connection): Promise<void> {
    await this.#queues.get(connection)?.tail
  }

  private handleFrame (connection: Connection, raw: RawData, isBinary: boolean): void {
    if (isBinary) {
      this.metrics.clientFrames.inc({ outcome: 'invalid' })
      connection.close(CloseCode.unsupportedData, 'binary frames are not supported')
      return
    }
    if (!connection.takeToken()) {
      this.reject(connection, 'rate_limited', ErrorCode.rateLimited, 'too many events: slow down')
      return
    }
    const queue = this.#queues.get(connection)
    if (queue !== undefined && queue.waiting >= this.limits.queueMax) {
      this.metrics.clientEventsDropped.inc({ reason: 'queue_full' })
      this.reject(connection, 'rate_limited', ErrorCode.rateLimited, 'too many events waiting: slow down')
      return
    }
    const frame = this.parse(connection, raw)
    if (frame === undefined) return
    this.metrics.clientFrames.inc({ outcome: 'accepted' })
    this.enqueue(connection, frame, queue)
  }

  /** One queue per socket: a client's events take effect in the order it sent them, never after it left. */
  private enqueue (connection: Connection, frame: ClientFrame, existing: EventQueue | undefined): void {
    const queue = existing ?? { tail: Promise.resolve(), waiting: 0 }
    queue.waiting += 1
    queue.tail = queue.tail.then(async () => {
      if (connection.closeCode !== undefined || connection.socket.readyState !== connection.socket.OPEN) {
        this.metrics.clientEventsDropped.inc({ reason: 'socket_closed' })
        this.log.info({ connectionId: connection.id, event: frame.type }, 'client event dropped: socket closed')
        return
      }
      await this.clientEvents.handle(connection, frame)
    }).catch((error: unknown) => {
      this.log.error({ err: error, connectionId: connection.id, event: frame.type }, 'client event failed')
      this.reject(connection, 'invalid', ErrorCode.internal, `${frame.type} failed`)
    }).finally(() => { queue.waiting -= 1 })
    if (existing === undefined) this.#queues.set(connection, queue)
  }

  private parse (connection: Connection, raw: RawData): ClientFrame | undefined {
    const text = textOf(raw)
    if (nestedDeeperThan(text, this.limits.maxJsonDepth)) {
      this.reject(connection, 'invalid', ErrorCode.invalidPayload, `frame nested deeper than ${this.limits.maxJsonDepth} levels`)
      return undefined
    }
    let value: unknown
    try {
      value = JSON.parse(text)
    } catch {
      this.reject(connection, 'invalid', ErrorCode.invalidJson, 'frame is not valid JSON')
      return undefined
    }
    const type = typeof value === 'object' && value !== null && 'type' in value ? value.type : undefined
    const validator = typeof type === 'string' ? validators.get(type) : undefined
    if (validator === undefined) {
      this.reject(connection, 'invalid', ErrorCode.unknownType, `unknown event type ${preview(type)}; expected one of ${KNOWN_TYPES}`)
      return undefined
    }
    if (!validator.Check(value)) {
      const first = validator.Errors(value)[0]
      const where = first === undefined || first.instancePath === '' ? 'frame' : first.instancePath.slice(1, 100)
      this.reject(connection, 'invalid', ErrorCode.invalidPayload, `${type as ClientEventType}: ${where} ${first?.message ?? 'is invalid'}`)
      return undefined
    }
    if (connection.attributes.endpoint === 'broadcast' && type !== 'ping') {
      this.reject(connection, 'invalid', ErrorCode.unknownType, '/broadcast accepts no client events but ping')
      return undefined
    }
    return value as ClientFrame
  }

  private reject (connection: Connection, outcome: 'invalid' | 'rate_limited', code: string, message: string): void {
    this.metrics.clientFrames.inc({ outcome })
    connection.sendFrame({ type: 'error', data: { code, message } })
    if (connection.strike()) connection.close(CloseCode.abuse, 'too many rejected frames')
  }
}
