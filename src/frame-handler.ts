import type { RawData } from 'ws'
import { Compile, type Validator } from 'typebox/compile'
import type { ClientEvents } from './client-events.js'
import type { Connection } from './connection.js'
import type { HubLogger } from './hub.js'
import type { Metrics } from './metrics.js'
import { clientFrames, CloseCode, ErrorCode, type ClientEventType, type ClientFrame } from './protocol.js'

const validators = new Map<string, Validator>(
  Object.entries(clientFrames).map(([type, schema]) => [type, Compile(schema)])
)

function textOf (raw: RawData): string {
  if (Buffer.isBuffer(raw)) return raw.toString('utf8')
  return (Array.isArray(raw) ? Buffer.concat(raw) : Buffer.from(raw)).toString('utf8')
}

/**
 * Everything between a client's raw frame and a client event: rate limit, JSON, type, schema. A bad frame
 * is answered with an `error` frame and the socket stays usable, until abuse closes it with 4429.
 */
export class FrameHandler {
  readonly #queues = new WeakMap<Connection, Promise<void>>()

  constructor (readonly clientEvents: ClientEvents, readonly metrics: Metrics, readonly log: HubLogger) {}

  onMessage (connection: Connection, raw: RawData): void {
    if (!connection.takeToken()) {
      this.reject(connection, 'rate_limited', ErrorCode.rateLimited, 'too many events: slow down')
      return
    }
    const frame = this.parse(connection, raw)
    if (frame === undefined) return
    this.metrics.clientFrames.inc({ outcome: 'accepted' })
    // One queue per socket: a client's events take effect in the order it sent them.
    const previous = this.#queues.get(connection) ?? Promise.resolve()
    const next = previous.then(async () => await this.clientEvents.handle(connection, frame)).catch((error: unknown) => {
      this.log.error({ err: error, connectionId: connection.id, event: frame.type }, 'client event failed')
      connection.sendFrame({ type: 'error', data: { code: ErrorCode.internal, message: `${frame.type} failed` } })
    })
    this.#queues.set(connection, next)
  }

  /** Resolves once every queued event of the socket has been handled. */
  async settled (connection: Connection): Promise<void> {
    await this.#queues.get(connection)
  }

  private parse (connection: Connection, raw: RawData): ClientFrame | undefined {
    if (connection.attributes.endpoint === 'broadcast') {
      this.reject(connection, 'invalid', ErrorCode.unknownType, '/broadcast accepts no client events')
      return undefined
    }
    let value: unknown
    try {
      value = JSON.parse(textOf(raw))
    } catch {
      this.reject(connection, 'invalid', ErrorCode.invalidJson, 'frame is not valid JSON')
      return undefined
    }
    const type = typeof value === 'object' && value !== null && 'type' in value ? value.type : undefined
    const validator = typeof type === 'string' ? validators.get(type) : undefined
    if (validator === undefined) {
      const known = Object.keys(clientFrames).join(', ')
      this.reject(connection, 'invalid', ErrorCode.unknownType, `unknown event type ${JSON.stringify(type ?? null)}; expected one of ${known}`)
      return undefined
    }
    if (!validator.Check(value)) {
      const first = validator.Errors(value)[0]
      const where = first === undefined || first.instancePath === '' ? 'frame' : first.instancePath.slice(1)
      this.reject(connection, 'invalid', ErrorCode.invalidPayload, `${type as ClientEventType}: ${where} ${first?.message ?? 'is invalid'}`)
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
