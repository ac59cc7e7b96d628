import type { RawData, WebSocket } from 'ws'
import { Admission, type AdmissionOptions, type SocketRequest } from './admission.js'
import type { Principal } from '../auth.js'
import { Connection, type ConnectionLimits } from './connection.js'
import { ExpiryWheel } from './expiry.js'
import type { FrameHandler } from './frame-handler.js'
import type { Hub } from './hub.js'
import { closeCodeLabel, type Metrics } from '../metrics.js'
import type { ChatLog } from '../stores/chat-log.js'
import type { ChatSocket, Presence } from '../stores/presence.js'
import { CloseCode, type ServerFrame } from '../protocol/protocol.js'
import { Role, type ChatScope, type SocketAttributes } from '../protocol/routing.js'
import { SocketUpkeep } from './upkeep.js'
import { parseRecovery, Recovery, type RecoveryOptions, type Replay } from './recovery.js'

export interface SessionLogger {
  info: (object: object, message: string) => void
  warn: (object: object, message: string) => void
  error: (object: object, message: string) => void
}

export interface SessionOptions extends AdmissionOptions, RecoveryOptions {
  limits: ConnectionLimits
  pingIntervalMs: number
}

/**
 * The life of a socket: admitted (admission.ts), recorded in presence and indexed while open, told
 * `connected`, and its goodbye. Liveness and the drain are upkeep.ts. Fastify-free: the socket routes
 * hand over the raw socket and request bits.
 */
export class SocketSessions {
  readonly admission: Admission
  readonly upkeep: SocketUpkeep
  readonly recovery: Recovery
  /** Goodbyes still publishing: a drain waits for them before the bus closes. */
  readonly #goodbyes = new Set<Promise<void>>()
  /** Closes sockets with 4401 when their token expires. */
  readonly #expiry = new ExpiryWheel((connection) => connection.close(CloseCode.badToken, 'token expired'))
  /** The listeners of every socket (see `listen`). */
  readonly #listeners = listenersOf(this)

  constructor (
    readonly hub: Hub,
    readonly presence: Presence,
    readonly chatLog: Pick<ChatLog, 'scopeOf'>,
    readonly frames: FrameHandler,
    verifyToken: (token: string) => Principal,
    readonly metrics: Metrics,
    readonly log: SessionLogger,
    readonly options: SessionOptions
  ) {
    this.admission = new Admission(verifyToken, metrics, log, options)
    this.recovery = new Recovery(hub, hub.bus, metrics, options)
    this.upkeep = new SocketUpkeep({
      connections: () => hub.connections(),
      size: () => hub.size,
      goodbyes: () => [...this.#goodbyes]
    }, metrics, log, options.pingIntervalMs)
  }

  get draining (): boolean {
    return this.upkeep.draining
  }

  open (endpoint: 'chat' | 'broadcast', socket: WebSocket, request: SocketRequest): Connection | undefined {
    const principal = this.admission.admit(endpoint, socket, request, this.draining)
    if (principal === undefined) return undefined
    const attributes: SocketAttributes = {
      endpoint,
      role: principal.role,
      userId: principal.userId,
      userKey: `${principal.role}:${principal.userId}`
    }
    if (endpoint === 'chat' && principal.chatUuid !== undefined) attributes.chatUuid = principal.chatUuid
    if (endpoint === 'broadcast' && principal.sources !== undefined) attributes.sources = principal.sources
    const connection = new Connection(socket, attributes, principal.user, this.options.limits, this.hub.writer)
    connection.expiresAt = principal.expiresAt
    connection.recovery = parseRecovery(request.since, request.history, this.options.historySize)
    this.#expiry.add(connection)
    this.admission.track(connection, request.address)
    this.listen(connection)

    this.metrics.socketsOpen.inc({ endpoint, role: attributes.role })
    this.log.info({ endpoint, role: attributes.role, userId: attributes.userId, connectionId: connection.id }, 'socket open')
    this.register(connection, principal)
    return connection
  }

  /** See SocketUpkeep.drain. */
  async drain (windowMs: number): Promise<void> {
    await this.upkeep.drain(windowMs)
  }

  async close (): Promise<void> {
    this.#expiry.stop()
    await this.upkeep.close()
  }

  /**
   * Presence first: it may refuse the socket (its user holds the cap of sockets over all nodes), which
   * is then closed 4429 having received nothing. Otherwise the socket is indexed and, once the bus
   * delivers its topics, told `connected`: no frame before it, nothing after it missed.
   */
  private register (connection: Connection, principal: Principal): void {
    const admitted = this.announce(connection, principal).catch((error: unknown) => {
      this.log.error({ err: error, connectionId: connection.id }, 'presence update on open failed')
      return true
    })
    // Its goodbye waits for this; a refused socket's is cleared first, so its close touches nothing.
    connection.announced = admitted.then((recorded) => { connection.announced = recorded ? ANNOUNCED : undefined })
    admitted.then(async (recorded) => {
      const { attributes } = connection
      if (!recorded) {
        this.metrics.socketsRefused.inc({ reason: 'user_cap' })
        this.log.info({ endpoint: attributes.endpoint, userId: attributes.userId, connectionId: connection.id }, 'socket refused: too many sockets')
        connection.close(CloseCode.abuse, 'too many sockets')
        return
      }
      if (connection.socket.readyState !== connection.socket.OPEN) return
      await this.hub.add(connection, (positions) => {
        // A drain started meanwhile took the sockets indexed then: this one would escape it.
        if (this.draining) connection.close(CloseCode.restarting, 'server restarting')
        else if (connection.recovery === undefined) this.welcome(connection, principal, { streams: positions, frames: [], skipUpTo: new Map() })
        else void this.recovery.run(connection, positions, (replay) => this.welcome(connection, principal, replay))
      })
    }).catch((error: unknown) => {
      // Without its streams' positions the socket could not tell its client where it stands.
      this.log.error({ err: error, connectionId: connection.id }, 'socket registration failed')
      connection.close(CloseCode.restarting, 'streams unavailable: reconnect')
    })
  }

  /**
   * Listeners attach synchronously, before any await, so no frame or close is missed. They are the same
   * four functions for every socket (ws calls them with the socket as `this`), not closures per socket:
   * an idle socket holds as little as it can.
   */
  private listen (connection: Connection): void {
    const socket = connection.socket as SessionSocket
    socket[CONNECTION] = connection
    const listeners = this.#listeners
    socket.on('message', listeners.message)
    socket.on('pong', listeners.pong)
    socket.on('error', listeners.error)
    socket.once('close', listeners.close)
  }

  private welcome (connection: Connection, principal: Principal, replay: Replay): boolean {
    const { attributes } = connection
    if (connection.socket.readyState !== connection.socket.OPEN) return false
    const data: ServerFrame<'connected'>['data'] = { connection_id: connection.id, user: principal.user }
    if (attributes.chatUuid !== undefined) data.chat = { uuid: attributes.chatUuid }
    data.streams = replay.streams
    if (replay.recovered !== undefined) data.recovered = replay.recovered
    return connection.sendFrame({ type: 'connected', data })
  }

  /** Records the socket in presence (which announces a user's first socket, a customer's with its scope); false: over the user's cap. */
  private async announce (connection: Connection, principal: Principal): Promise<boolean> {
    const { attributes } = connection
    if (attributes.chatUuid === undefined) {
      return await this.presence.addSession({
        connectionId: connection.id,
        operatorId: attributes.userId,
        user: principal.user,
        widgets: principal.sourcesClaim.widgets,
        departments: principal.sourcesClaim.departments,
        connectedAt: Date.now()
      })
    }
    const socket: ChatSocket = { chatUuid: attributes.chatUuid, userKey: attributes.userKey, connectionId: connection.id, user: connection.user }
    if (attributes.role === Role.customer) socket.customerScope = await this.customerScope(attributes.chatUuid, connection.id)
    return await this.presence.joinChat(socket)
  }

  /** Where a customer's customer_presence goes: its chat's scope; unknown (consoles without sources) if unreadable. */
  private async customerScope (chatUuid: string, connectionId: string): Promise<ChatScope> {
    try {
      return await this.chatLog.scopeOf(chatUuid)
    } catch (error) {
      this.metrics.presenceFailures.inc({ operation: 'scope' })
      this.log.warn({ err: error, connectionId }, 'chat scope not read: customer_presence goes to consoles without sources only')
      return { uuid: chatUuid, unknown: true }
    }
  }

  /** `peerCode` is what the peer answered (1006 if it never did); the relay's own code wins. */
  closed (connection: Connection, peerCode: number): void {
    const { attributes } = connection
    const code = connection.closeCode ?? peerCode
    this.hub.remove(connection)
    this.#expiry.remove(connection)
    this.admission.untrack(connection)
    this.metrics.socketsOpen.dec({ endpoint: attributes.endpoint, role: attributes.role })
    this.metrics.socketsClosed.inc({ endpoint: attributes.endpoint, code: closeCodeLabel(code) })
    this.log.info({
      endpoint: attributes.endpoint, role: attributes.role, userId: attributes.userId, connectionId: connection.id, code, droppedWhileClosing: connection.droppedWhileClosing
    }, 'socket closed')
    const goodbye: Promise<void> = this.goodbye(connection).catch((error: unknown) => {
      this.log.error({ err: error, connectionId: connection.id }, 'presence update on close failed')
    }).finally(() => this.#goodbyes.delete(goodbye))
    this.#goodbyes.add(goodbye)
  }

  /** Presence forgets the socket (announcing a user's last one) once its join settled; a refused socket was never recorded. */
  private async goodbye (connection: Connection): Promise<void> {
    const announced = connection.announced
    if (announced === undefined) return
    await announced
    if (connection.announced === undefined) return
    if (connection.attributes.chatUuid === undefined) await this.presence.removeSession(connection.id)
    else await this.presence.leaveChat(connection.id)
  }
}

const CONNECTION = Symbol('connection')
/** A ws socket that knows its Connection, so one set of listeners serves every socket. */
type SessionSocket = WebSocket & { [CONNECTION]: Connection }

function listenersOf (sessions: SocketSessions): {
  message: (this: WebSocket, raw: RawData, isBinary: boolean) => void
  pong: (this: WebSocket) => void
  error: (this: WebSocket, error: Error) => void
  close: (this: WebSocket, code: number) => void
} {
  return {
    // FrameHandler catches its own errors; the rest cannot throw but are guarded all the same.
    message (raw, isBinary) { sessions.frames.onMessage((this as SessionSocket)[CONNECTION], raw, isBinary) },
    pong () { (this as SessionSocket)[CONNECTION].alive = true },
    error (error) {
      const connection = (this as SessionSocket)[CONNECTION]
      // ws closes the socket itself on a protocol error (1009 frame too large): log the code it sent.
      connection.closeCode ??= protocolCloseCode(error)
      sessions.log.warn({ err: error, connectionId: connection.id }, 'socket error')
    },
    close (code) {
      try {
        sessions.closed((this as SessionSocket)[CONNECTION], code)
      } catch (error) {
        sessions.log.error({ err: error }, 'socket close handling failed')
      }
    }
  }
}

/** What a recorded socket's `announced` becomes once its join settled: one settled promise for every socket. */
const ANNOUNCED = Promise.resolve()

/** The close code ws sends when it refuses a frame (see ws's receiver errors); undefined for other errors. */
function protocolCloseCode (error: Error): number | undefined {
  const code = (error as { code?: unknown }).code
  if (typeof code !== 'string' || !code.startsWith('WS_ERR_')) return undefined
  if (code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') return CloseCode.tooLarge
  return code === 'WS_ERR_INVALID_UTF8' ? 1007 : 1002
}
