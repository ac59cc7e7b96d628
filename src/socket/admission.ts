import type { WebSocket } from 'ws'
import { authorize, SocketAuthError, type Principal } from '../auth.js'
import { closeSocket, type Connection } from './connection.js'
import { closeCodeLabel, type Metrics } from '../metrics.js'
import { CloseCode } from '../protocol/protocol.js'

export interface AdmissionLogger {
  info: (object: object, message: string) => void
}

export interface SocketRequest {
  token: string | undefined
  origin: string | undefined
  /** `since` and `history` query parameters (SPEC Recovery), as given. */
  since?: string
  history?: string
  /** A `chat` query parameter, if the client named one; it must match the token's claim. */
  requestedChat: string | undefined
  /** The peer's address (per-address cap). */
  address: string | undefined
}

export interface AdmissionOptions {
  allowedOrigins: string[] | null
  /** Open sockets per peer address on this node; 0: no cap. */
  maxConnectionsPerIp: number
}

/**
 * Who may open a socket: not while draining, not over the per-address cap, only from an allowed origin,
 * with a valid token whose role and chat fit the endpoint. A refused socket gets its close code and a
 * fixed reason, then is cut after a short handshake grace (ws alone would hold it 30 s).
 */
export class Admission {
  /** Open sockets per peer address, and each socket's address (only while a cap is set). */
  readonly #perAddress = new Map<string, number>()
  readonly #addressOf = new Map<Connection, string>()

  constructor (
    readonly verifyToken: (token: string) => Principal,
    readonly metrics: Metrics,
    readonly log: AdmissionLogger,
    readonly options: AdmissionOptions
  ) {}

  /** The socket's principal, or undefined once it was refused (and closed). */
  admit (endpoint: 'chat' | 'broadcast', socket: WebSocket, request: SocketRequest, draining: boolean): Principal | undefined {
    try {
      return this.check(endpoint, request, draining)
    } catch (error) {
      this.refuse(endpoint, socket, error instanceof SocketAuthError ? error : new SocketAuthError(CloseCode.badToken, 'invalid token'))
      return undefined
    }
  }

  /** Counts an admitted socket against its address (while a per-address cap is set). */
  track (connection: Connection, address: string | undefined): void {
    if (this.options.maxConnectionsPerIp === 0 || address === undefined) return
    this.#addressOf.set(connection, address)
    this.#perAddress.set(address, (this.#perAddress.get(address) ?? 0) + 1)
  }

  untrack (connection: Connection): void {
    const address = this.#addressOf.get(connection)
    if (address === undefined) return
    this.#addressOf.delete(connection)
    const left = (this.#perAddress.get(address) ?? 1) - 1
    if (left > 0) this.#perAddress.set(address, left)
    else this.#perAddress.delete(address)
  }

  private check (endpoint: 'chat' | 'broadcast', request: SocketRequest, draining: boolean): Principal {
    if (draining) throw new SocketAuthError(CloseCode.restarting, 'server restarting', 'draining')
    const cap = this.options.maxConnectionsPerIp
    if (cap > 0 && request.address !== undefined && (this.#perAddress.get(request.address) ?? 0) >= cap) {
      throw new SocketAuthError(CloseCode.abuse, 'too many connections from this address', 'ip_cap')
    }
    const origins = this.options.allowedOrigins
    if (origins !== null && (request.origin === undefined || !origins.includes(request.origin))) {
      throw new SocketAuthError(CloseCode.forbidden, 'origin not allowed', 'origin')
    }
    if (request.token === undefined || request.token === '') throw new SocketAuthError(CloseCode.badToken, 'missing token')
    const principal = this.verifyToken(request.token)
    authorize(endpoint, principal, request.requestedChat)
    return principal
  }

  private refuse (endpoint: 'chat' | 'broadcast', socket: WebSocket, refusal: SocketAuthError): void {
    this.metrics.socketsClosed.inc({ endpoint, code: closeCodeLabel(refusal.closeCode) })
    this.metrics.socketsRefused.inc({ reason: refusal.reason })
    this.log.info({ endpoint, code: refusal.closeCode, reason: refusal.message }, 'socket refused')
    // A refused socket's error (a peer gone before the close handshake) changes nothing: the refusal is counted.
    socket.on('error', (error) => this.log.info({ endpoint, err: error }, 'refused socket error'))
    closeSocket(socket, refusal.closeCode, refusal.message)
  }
}
