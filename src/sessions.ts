import type { RawData, WebSocket } from 'ws'
import { authorize, SocketAuthError, type Principal } from './auth.js'
import { closeSocket, Connection, type ConnectionLimits } from './connection.js'
import { ExpiryWheel } from './expiry.js'
import type { FrameHandler } from './frame-handler.js'
import type { Hub } from './hub.js'
import { closeCodeLabel, type Metrics } from './metrics.js'
import type { Presence } from './presence.js'
import { CloseCode } from './protocol.js'
import type { Publisher } from './publisher.js'
import type { SocketAttributes } from './routing.js'

export interface SessionLogger {
  info: (object: object, message: string) => void
  warn: (object: object, message: string) => void
  error: (object: object, message: string) => void
}

export interface SocketRequest {
  token: string | undefined
  origin: string | undefined
  /** A `chat` query parameter, if the client named one; it must match the token's claim. */
  requestedChat: string | undefined
  /** The peer's address (per-address cap). */
  address: string | undefined
}

export interface SessionOptions {
  limits: ConnectionLimits
  allowedOrigins: string[] | null
  pingIntervalMs: number
  /** Open sockets per peer address on this node; 0: no cap. */
  maxConnectionsPerIp: number
}

/**
 * The life of a socket: admission (origin, token, role), indexes and presence while open, ping for
 * liveness, and the goodbye. Fastify-free: the socket routes hand over the raw socket and request bits.
 */
export class SocketSessions {
  #draining = false
  /** Goodbyes still publishing: a drain waits for them before the bus closes. */
  readonly #goodbyes = new Set<Promise<void>>()
  readonly #pingTimer: NodeJS.Timeout
  /** Closes sockets with 4401 when their token expires. */
  readonly #expiry = new ExpiryWheel((connection) => connection.close(CloseCode.badToken, 'token expired'))
  /** Open sockets per peer address, and each socket's address (only while a cap is set). */
  readonly #perAddress = new Map<string, number>()
  readonly #addressOf = new Map<Connection, string>()
  /** The listeners of every socket (see `listen`). */
  readonly #listeners = listenersOf(this)
  constructor (
    readonly hub: Hub,
    readonly presence: Presence,
    readonly publisher: Publisher,
    readonly frames: FrameHandler,
    readonly verifyToken: (token: string) => Principal,
    readonly metrics: Metrics,
    readonly log: SessionLogger,
    readonly options: SessionOptions
  ) {
    this.#pingTimer = setInterval(() => this.pingAll(), options.pingIntervalMs)
    this.#pingTimer.unref()
  }

  get draining (): boolean {
    return this.#draining
  }

  open (endpoint: 'chat' | 'broadcast', socket: WebSocket, request: SocketRequest): Connection | undefined {
    let principal: Principal
    try {
      principal = this.admit(endpoint, request)
    } catch (error) {
      const refusal = error instanceof SocketAuthError ? error : new SocketAuthError(CloseCode.badToken, 'invalid token')
      this.refuse(endpoint, socket, refusal)
      return undefined
    }
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
    this.#expiry.add(connection)
    if (this.options.maxConnectionsPerIp > 0 && request.address !== undefined) this.countAddress(connection, request.address)
    this.listen(connection)

    this.metrics.socketsOpen.inc({ endpoint, role: attributes.role })
    this.log.info({ endpoint, role: attributes.role, userId: attributes.userId, connectionId: connection.id }, 'socket open')
    this.register(connection, principal)
    return connection
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
      // A drain started meanwhile took the sockets indexed then: this one would escape it.
      if (this.draining) {
        connection.close(CloseCode.restarting, 'server restarting')
        return
      }
      await this.hub.add(connection)
      this.welcome(connection, principal)
    }).catch((error: unknown) => {
      this.log.error({ err: error, connectionId: connection.id }, 'socket registration failed')
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

  private welcome (connection: Connection, principal: Principal): void {
    const { attributes } = connection
    if (connection.socket.readyState !== connection.socket.OPEN) return
    connection.sendFrame({
      type: 'connected',
      data: attributes.chatUuid === undefined
        ? { connection_id: connection.id, user: principal.user }
        : { connection_id: connection.id, user: principal.user, chat: { uuid: attributes.chatUuid } }
    })
  }

  /**
   * Closes a socket that was never admitted, with a short grace for the close handshake: a flood of
   * refused upgrades must not hold file descriptors for ws's 30 s close timeout.
   */
  private refuse (endpoint: 'chat' | 'broadcast', socket: WebSocket, refusal: SocketAuthError): void {
    this.metrics.socketsClosed.inc({ endpoint, code: closeCodeLabel(refusal.closeCode) })
    this.metrics.socketsRefused.inc({ reason: refusal.reason })
    this.log.info({ endpoint, code: refusal.closeCode, reason: refusal.message }, 'socket refused')
    // A refused socket's error (a peer gone before the close handshake) changes nothing: the refusal is counted.
    socket.on('error', (error) => this.log.info({ endpoint, err: error }, 'refused socket error'))
    closeSocket(socket, refusal.closeCode, refusal.message)
  }

  private admit (endpoint: 'chat' | 'broadcast', request: SocketRequest): Principal {
    if (this.#draining) throw new SocketAuthError(CloseCode.restarting, 'server restarting', 'draining')
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

  /** Records the socket in presence (which announces a user's first socket); false: over the user's cap. */
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
    return await this.presence.joinChat({
      chatUuid: attributes.chatUuid, userKey: attributes.userKey, connectionId: connection.id, user: connection.user
    })
  }

  private countAddress (connection: Connection, address: string): void {
    this.#addressOf.set(connection, address)
    this.#perAddress.set(address, (this.#perAddress.get(address) ?? 0) + 1)
  }

  private uncountAddress (connection: Connection): void {
    const address = this.#addressOf.get(connection)
    if (address === undefined) return
    this.#addressOf.delete(connection)
    const left = (this.#perAddress.get(address) ?? 1) - 1
    if (left > 0) this.#perAddress.set(address, left)
    else this.#perAddress.delete(address)
  }

  /** `peerCode` is what the peer answered (1006 if it never did); the relay's own code wins. */
  closed (connection: Connection, peerCode: number): void {
    const { attributes } = connection
    const code = connection.closeCode ?? peerCode
    this.hub.remove(connection)
    this.#expiry.remove(connection)
    this.uncountAddress(connection)
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

  /** Terminates sockets that did not answer the previous ping, then pings the rest. */
  pingAll (): void {
    for (const connection of this.hub.connections()) {
      if (!connection.alive) {
        this.log.info({ connectionId: connection.id }, 'socket did not answer ping: terminated')
        connection.socket.terminate()
        continue
      }
      connection.alive = false
      connection.socket.ping()
    }
  }

  /**
   * Refuses new sockets (1012) and closes the open ones with 1012 in batches, one per time slice, spread
   * over `windowMs` so that clients reconnect elsewhere without a thundering herd. Resolves once they are
   * closed and their presence goodbyes published (or after a bound).
   */
  async drain (windowMs: number): Promise<void> {
    this.#draining = true
    this.metrics.draining.set(1)
    const open = [...this.hub.connections()]
    const slices = Math.max(1, Math.min(open.length, Math.floor(windowMs / DRAIN_SLICE_MS)))
    const batch = Math.ceil(open.length / slices)
    this.log.info({ sockets: open.length, windowMs, slices }, 'drain started')
    for (let slice = 0; slice * batch < open.length; slice++) {
      if (slice > 0) await sleep(windowMs / slices)
      for (const connection of open.slice(slice * batch, (slice + 1) * batch)) {
        connection.close(CloseCode.restarting, 'server restarting')
      }
    }
    await this.settle(open)
    this.log.info({ sockets: open.length }, 'drain done')
  }

  /** Closes every socket left with 1012 (no spreading) and waits for them, like the end of a drain. */
  async close (): Promise<void> {
    this.#draining = true
    clearInterval(this.#pingTimer)
    this.#expiry.stop()
    const open = [...this.hub.connections()]
    for (const connection of open) connection.close(CloseCode.restarting, 'server restarting')
    await this.settle(open)
  }

  /** Waits until the sockets are closed (Connection cuts a silent peer) and the goodbyes are out, bounded. */
  private async settle (connections: Connection[]): Promise<void> {
    const settled = Promise.all(connections.map(async (connection) => await closedSocket(connection.socket)))
      .then(async () => await Promise.allSettled([...this.#goodbyes]))
      .then(() => true)
    if (!await within(settled, SETTLE_BOUND_MS)) {
      this.log.warn({ sockets: this.hub.size, goodbyes: this.#goodbyes.size }, `sockets or goodbyes still pending after ${SETTLE_BOUND_MS} ms`)
    }
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

/** A drain closes one batch per slice of this length (fewer slices when there are fewer sockets). */
const DRAIN_SLICE_MS = 100
/** Longer than Connection's close grace: by then every socket is closed or cut. */
const SETTLE_BOUND_MS = 3000

async function sleep (ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms))
}

async function closedSocket (socket: WebSocket): Promise<void> {
  if (socket.readyState === socket.CLOSED) return
  await new Promise((resolve) => socket.once('close', resolve))
}

/** True when `promise` resolved within `ms`; the timer never outlives the wait. */
async function within (promise: Promise<boolean>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), ms) })
  try {
    return await Promise.race([promise, timeout])
  } finally {
    clearTimeout(timer)
  }
}
