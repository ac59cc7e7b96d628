import type { PresencePackets } from './presence.js'
import { packetArgs, runScript, type PresenceKeys } from './presence-node.js'
import { ADD_SESSION, JOIN, LEAVE, REMOVE_SESSION } from './presence-scripts.js'
import type { ChatHolding, ConsoleHolding } from './presence-sockets.js'
import type { RedisCommands } from './redis.js'

/**
 * How a socket's record reaches Redis: one script per decision on one Redis (ScriptWrites), or slot by
 * slot on a cluster (ShardedWrites). SocketRecords decides when, and retries; this decides how.
 */
export interface PresenceWrites {
  /** Records a chat socket: REFUSED (the cap), recorded, or ANNOUNCED (the user's first: user_connected went out). */
  join: (connectionId: string, holding: ChatHolding, cap: number, force: boolean) => Promise<number>
  /** Forgets a chat socket; true when it announced user_disconnected. */
  leave: (connectionId: string, holding: ChatHolding, force: boolean) => Promise<boolean>
  /**
   * After join or leave answered: what else the decision needs (on a cluster: customer_presence to the
   * consoles, and the node's hash after a leave). Idempotent; throws UnsettledError until done.
   */
  settle: (connectionId: string, holding: ChatHolding, present: boolean) => Promise<void>
  /** Records a console session: REFUSED (the cap) or recorded. */
  addSession: (connectionId: string, holding: ConsoleHolding, cap: number) => Promise<number>
  removeSession: (connectionId: string, holding: ConsoleHolding) => Promise<void>
}

/**
 * The decision was taken and announced, what follows it was not done yet: retried without `force`,
 * as nothing must be announced again. `operation` labels relay_presence_failures_total.
 */
export class UnsettledError extends Error {
  constructor (readonly operation: string, cause: unknown) {
    super(`presence: ${operation} not written yet: ${(cause as Error).message}`, { cause })
    this.name = 'UnsettledError'
  }
}

export interface ScriptWritesOptions {
  client: RedisCommands
  keys: PresenceKeys
  nodeId: string
  packets: PresencePackets
}

/** One Redis (or Sentinel): each decision, its node hash and its announcements in one script (presence-scripts.ts). */
export class ScriptWrites implements PresenceWrites {
  constructor (readonly options: ScriptWritesOptions) {}

  async join (connectionId: string, holding: ChatHolding, cap: number, force: boolean): Promise<number> {
    const { client, keys, packets } = this.options
    return Number(await runScript(JOIN, client, this.#chatKeys(holding),
      [connectionId, holding.json, cap, force ? 'force' : '', ...packetArgs(packets, keys.prefix, 'user_connected', holding.socket)]))
  }

  async leave (connectionId: string, holding: ChatHolding, force: boolean): Promise<boolean> {
    const { client, keys, packets } = this.options
    return await runScript(LEAVE, client, this.#chatKeys(holding),
      [connectionId, force ? 'force' : '', ...packetArgs(packets, keys.prefix, 'user_disconnected', holding.socket)]) === 1
  }

  async settle (): Promise<void> {}

  async addSession (connectionId: string, holding: ConsoleHolding, cap: number): Promise<number> {
    const { client, keys, nodeId } = this.options
    return Number(await ADD_SESSION.run(client, [holding.operator, keys.consoles, keys.sockets(nodeId)], [connectionId, holding.session, holding.json, cap]))
  }

  async removeSession (connectionId: string, holding: ConsoleHolding): Promise<void> {
    const { client, keys, nodeId } = this.options
    await REMOVE_SESSION.run(client, [holding.operator, keys.consoles, keys.sockets(nodeId)], [connectionId])
  }

  /** KEYS of JOIN and LEAVE: the room, this node's hash and, for a customer, its chat's index. */
  #chatKeys (holding: ChatHolding): string[] {
    const keys = [holding.room, this.options.keys.sockets(this.options.nodeId)]
    if (holding.customers !== undefined) keys.push(holding.customers)
    return keys
  }
}
