import type { Bus } from './bus.js'
import type { Metrics } from '../metrics.js'
import type { ChatCustomers, OnlineUser } from '../protocol/protocol.js'
import { summarizeSessions, type ChatSocket, type ConsoleSession, type Presence, type PresenceEvent, type PresenceLogger, type PresencePackets } from './presence.js'

export interface MemoryPresenceOptions {
  bus: Pick<Bus, 'publish' | 'append'>
  packets: PresencePackets
  metrics: Metrics
  /** Sockets one user may hold per chat room, and consoles per operator. */
  maxSocketsPerUser: number
  log: PresenceLogger
}

/** One node: the decision and its announcement happen in one synchronous step. */
export class MemoryPresence implements Presence {
  /** chat → user key → socket ids */
  readonly #rooms = new Map<string, Map<string, Set<string>>>()
  readonly #chatSockets = new Map<string, ChatSocket>()
  readonly #sessions = new Map<string, ConsoleSession>()
  /** operator id → how many consoles it holds */
  readonly #consoles = new Map<string, number>()
  readonly #options: MemoryPresenceOptions

  constructor (options: MemoryPresenceOptions) {
    this.#options = options
  }

  async joinChat (socket: ChatSocket): Promise<boolean> {
    let users = this.#rooms.get(socket.chatUuid)
    if (users === undefined) {
      users = new Map()
      this.#rooms.set(socket.chatUuid, users)
    }
    let sockets = users.get(socket.userKey)
    if (sockets === undefined) {
      sockets = new Set()
      users.set(socket.userKey, sockets)
    }
    if (sockets.size >= this.#options.maxSocketsPerUser) return false
    sockets.add(socket.connectionId)
    this.#chatSockets.set(socket.connectionId, socket)
    if (sockets.size === 1) this.#announce('user_connected', socket)
    return true
  }

  async leaveChat (connectionId: string): Promise<void> {
    const socket = this.#chatSockets.get(connectionId)
    if (socket === undefined) return
    this.#chatSockets.delete(connectionId)
    const users = this.#rooms.get(socket.chatUuid)
    const sockets = users?.get(socket.userKey)
    if (users === undefined || sockets === undefined || !sockets.delete(connectionId) || sockets.size > 0) return
    users.delete(socket.userKey)
    if (users.size === 0) this.#rooms.delete(socket.chatUuid)
    this.#announce('user_disconnected', socket)
  }

  async addSession (session: ConsoleSession): Promise<boolean> {
    const held = this.#consoles.get(session.operatorId) ?? 0
    if (held >= this.#options.maxSocketsPerUser) return false
    this.#consoles.set(session.operatorId, held + 1)
    this.#sessions.set(session.connectionId, session)
    return true
  }

  async removeSession (connectionId: string): Promise<void> {
    const session = this.#sessions.get(connectionId)
    if (session === undefined) return
    this.#sessions.delete(connectionId)
    const held = (this.#consoles.get(session.operatorId) ?? 1) - 1
    if (held > 0) this.#consoles.set(session.operatorId, held)
    else this.#consoles.delete(session.operatorId)
  }

  async onlineUsers (): Promise<OnlineUser[]> {
    return summarizeSessions(this.#sessions.values())
  }

  async customersOnline (chatUuids: readonly string[]): Promise<ChatCustomers[]> {
    return chatUuids.map((chatUuid) => {
      const users = []
      for (const sockets of this.#rooms.get(chatUuid)?.values() ?? []) {
        // Any socket of the user stands for it: each carries the user's profile and whether it is a customer.
        const [first] = sockets
        const socket = first === undefined ? undefined : this.#chatSockets.get(first)
        if (socket?.customerScope !== undefined) users.push(socket.user)
      }
      return { chat: { uuid: chatUuid }, users }
    })
  }

  async close (): Promise<void> {
    this.#rooms.clear()
    this.#chatSockets.clear()
    this.#sessions.clear()
    this.#consoles.clear()
  }

  /** The embedded bus delivers inside publish: the event is out before the next decision. */
  #announce (event: PresenceEvent, socket: ChatSocket): void {
    const { bus, packets, metrics, log } = this.#options
    const published = packets(event, socket).map(async ({ topic, packet, durable }) => {
      if (durable === undefined) return await bus.publish(topic, packet)
      await bus.append({ payloads: [[durable.payloadHead]], appends: [{ topic, routingHead: durable.routingHead, payload: 0 }] })
    })
    Promise.all(published).then(() => metrics.eventsAccepted.inc({ source: 'presence' }), (error: unknown) => {
      // Only a closed bus refuses: the node is shutting down.
      metrics.presenceFailures.inc({ operation: 'announce' })
      log.warn({ err: error, event }, 'presence event not published')
    })
  }
}
