import { durableParts, encodePacket, type DurableParts } from '../protocol/packet.js'
import type { ChatCustomers, OnlineUser, User } from '../protocol/protocol.js'
import { audienceTopics, planDeliveries, type ChatScope, type RelayEvent } from '../protocol/routing.js'

/**
 * Who is connected: users per chat room (for user_connected / user_disconnected) and operator console
 * sessions (for /online-users), each capped per user. In-memory here; the Redis implementation answers
 * for the cluster. Both publish a user's presence events themselves, in the same step as the decision
 * (first socket in, last socket out), so two nodes can never announce one user out of order.
 */
export interface ConsoleSession {
  connectionId: string
  operatorId: string
  user: User
  widgets: readonly string[]
  departments: ReadonlyArray<string | number>
  /** ms since epoch */
  connectedAt: number
}

/** A `/chat` socket as presence knows it. */
export interface ChatSocket {
  chatUuid: string
  /** `role:userId` */
  userKey: string
  connectionId: string
  user: User
  /**
   * Only on a customer's socket: the chat's scope as the relay knew it when the socket opened. Its
   * customer_presence (online and offline alike) reaches the consoles this scope admits.
   */
  customerScope?: ChatScope
}

export type PresenceEvent = 'user_connected' | 'user_disconnected'

/**
 * A packet ready for the bus and the topic it goes out on. `durable` (customer_presence): the event
 * before its stream numbers it; the store appends it (Bus.append, or emitted in a Redis script).
 */
export interface TopicPacket {
  topic: string
  packet: Buffer
  durable?: DurableParts
}

/** Builds the bus packets of a presence event (presence never depends on the publisher). */
export type PresencePackets = (event: PresenceEvent, socket: ChatSocket) => TopicPacket[]

export interface Presence {
  /**
   * Records a socket of a user in a chat and, when it is the user's first there over all nodes, announces
   * user_connected. False (nothing recorded) when the user already holds the cap of sockets there.
   * Never rejects: with presence storage away the socket is admitted and recorded once it is back.
   */
  joinChat: (socket: ChatSocket) => Promise<boolean>
  /** Forgets a socket; user_disconnected when it was the user's last in the chat. Never rejects; retried until taken. */
  leaveChat: (connectionId: string) => Promise<void>
  /** Records a console session; false (nothing recorded) when its operator already holds the cap of them. */
  addSession: (session: ConsoleSession) => Promise<boolean>
  /** Forgets a console session. Never rejects; retried until taken. */
  removeSession: (connectionId: string) => Promise<void>
  onlineUsers: () => Promise<OnlineUser[]>
  /** The customers holding a socket in each chat, over all nodes: one entry per asked chat, in order. */
  customersOnline: (chatUuids: readonly string[]) => Promise<ChatCustomers[]>
  close: () => Promise<void>
}

export interface PresenceLogger {
  info: (object: object, message: string) => void
  warn: (object: object, message: string) => void
  error: (object: object, message: string) => void
}

/**
 * The one way presence events become bus packets: the routing table, each frame serialized once. A
 * customer's user_connected/user_disconnected carries its customer_presence for the consoles.
 */
export function presencePackets (event: PresenceEvent, socket: ChatSocket, lanes = 1): TopicPacket[] {
  const acceptedAt = Date.now()
  const { chatUuid, userKey, user, customerScope } = socket
  const events: RelayEvent[] = [{ kind: 'presence', event, chatUuid, userKey, user }]
  if (customerScope !== undefined) events.push({ kind: 'customer_presence', chat: customerScope, user, online: event === 'user_connected' })
  return events.flatMap((relayEvent) => planDeliveries(relayEvent)).flatMap((delivery) => {
    if (delivery.frame.type === 'customer_presence') {
      const durable = durableParts(delivery, acceptedAt)
      return audienceTopics(delivery.audience, lanes).map((topic) => ({ topic, packet: EMPTY, durable }))
    }
    const packet = encodePacket(delivery, acceptedAt)
    return audienceTopics(delivery.audience, lanes).map((topic) => ({ topic, packet }))
  })
}

const EMPTY = Buffer.alloc(0)

/** Folds console sessions into one OnlineUser per operator id. */
export function summarizeSessions (sessions: Iterable<ConsoleSession>): OnlineUser[] {
  const byOperator = new Map<string, { entry: OnlineUser, widgets: Set<string>, departments: Set<string | number>, since: number }>()
  for (const session of sessions) {
    let item = byOperator.get(session.operatorId)
    if (item === undefined) {
      item = {
        entry: { user: session.user, sources: { widgets: [], departments: [] }, sessions: 0, connected_at: '' },
        widgets: new Set(),
        departments: new Set(),
        since: session.connectedAt
      }
      byOperator.set(session.operatorId, item)
    }
    item.entry.sessions += 1
    item.since = Math.min(item.since, session.connectedAt)
    for (const widget of session.widgets) item.widgets.add(widget)
    for (const department of session.departments) item.departments.add(department)
  }
  return [...byOperator.values()].map(({ entry, widgets, departments, since }) => ({
    ...entry,
    sources: { widgets: [...widgets], departments: [...departments] },
    connected_at: new Date(since).toISOString()
  }))
}
