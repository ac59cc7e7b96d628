import type { OnlineUser, User } from './protocol.js'

/**
 * Who is connected: users per chat room (for user_connected / user_disconnected) and operator console
 * sessions (for /online-users). In-memory here; the Redis implementation answers for the cluster.
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

/** A user whose last socket in a chat was on a node that died: the others announce user_disconnected. */
export interface Departure {
  chatUuid: string
  userKey: string
  user: User
}

export type DepartureListener = (departures: Departure[]) => Promise<void>

export interface Presence {
  /** Records a socket of a user in a chat; true when it is that user's first socket there (over all nodes). */
  joinChat: (chatUuid: string, userKey: string, connectionId: string, user: User) => Promise<boolean>
  /** Forgets a socket; true when it was that user's last socket in the chat. */
  leaveChat: (chatUuid: string, userKey: string, connectionId: string) => Promise<boolean>
  addSession: (session: ConsoleSession) => Promise<void>
  removeSession: (connectionId: string) => Promise<void>
  onlineUsers: () => Promise<OnlineUser[]>
  /** The one listener for users whose last socket went with a dead (or closing) node. */
  onDepartures: (listener: DepartureListener) => void
  close: () => Promise<void>
}

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

export class MemoryPresence implements Presence {
  readonly #rooms = new Map<string, Map<string, Set<string>>>()
  readonly #sessions = new Map<string, ConsoleSession>()

  async joinChat (chatUuid: string, userKey: string, connectionId: string, _user: User): Promise<boolean> {
    let users = this.#rooms.get(chatUuid)
    if (users === undefined) {
      users = new Map()
      this.#rooms.set(chatUuid, users)
    }
    let sockets = users.get(userKey)
    if (sockets === undefined) {
      sockets = new Set()
      users.set(userKey, sockets)
    }
    sockets.add(connectionId)
    return sockets.size === 1
  }

  async leaveChat (chatUuid: string, userKey: string, connectionId: string): Promise<boolean> {
    const users = this.#rooms.get(chatUuid)
    const sockets = users?.get(userKey)
    if (users === undefined || sockets === undefined || !sockets.delete(connectionId)) return false
    if (sockets.size > 0) return false
    users.delete(userKey)
    if (users.size === 0) this.#rooms.delete(chatUuid)
    return true
  }

  async addSession (session: ConsoleSession): Promise<void> {
    this.#sessions.set(session.connectionId, session)
  }

  async removeSession (connectionId: string): Promise<void> {
    this.#sessions.delete(connectionId)
  }

  async onlineUsers (): Promise<OnlineUser[]> {
    return summarizeSessions(this.#sessions.values())
  }

  onDepartures (_listener: DepartureListener): void {
    // One node: its sockets leave through their own close, never all at once behind its back.
  }

  async close (): Promise<void> {
    this.#rooms.clear()
    this.#sessions.clear()
  }
}
