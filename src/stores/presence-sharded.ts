import type { ChatSocket, PresenceEvent, PresencePackets } from './presence.js'
import { runScript, type PresenceKeys } from './presence-node.js'
import { REFUSED, ANNOUNCED } from './presence-scripts.js'
import {
  ADD_SESSION_SHARDED, APPEND_CUSTOMER_PRESENCE, DECISION_TTL_MS, JOIN_ROOM, LEAVE_ROOM, REMOVE_SESSION_SHARDED
} from './presence-scripts-sharded.js'
import type { ChatHolding, ConsoleHolding } from './presence-sockets.js'
import { UnsettledError, type PresenceWrites } from './presence-writes.js'
import type { RedisCommands, RedisLogger } from './redis.js'

export interface ShardedOptions {
  client: RedisCommands
  keys: PresenceKeys
  nodeId: string
  packets: PresencePackets
  log: RedisLogger
}

/** A room script's answer: its outcome and the user's latest decision (`<seq>:<1|0>`, '' for none). */
type RoomAnswer = [number, string]

/** KEYS of JOIN_ROOM and LEAVE_ROOM, all under the chat's tag. */
export function roomKeys (keys: PresenceKeys, socket: ChatSocket): string[] {
  const room = keys.room(socket.chatUuid, socket.userKey)
  if (socket.customerScope === undefined) return [room]
  return [room, keys.customers(socket.chatUuid), keys.decisions(socket.chatUuid)]
}

/** A presence event's ephemeral packets (the chat room's), as channel and packet arguments on the chat's slot. */
export function roomPairs (packets: PresencePackets, keys: PresenceKeys, event: PresenceEvent, socket: ChatSocket): Array<string | Buffer> {
  return packets(event, socket).filter(({ packet }) => !isDurable(packet)).flatMap(({ topic, packet }) => [keys.channel(topic), packet])
}

/** LEAVE_ROOM for one socket (a leave, or a sweep with `force` false). */
export async function leaveRoom (options: ShardedOptions, socket: ChatSocket, force: boolean): Promise<RoomAnswer> {
  const { client, keys, packets } = options
  return await runScript(LEAVE_ROOM, client, roomKeys(keys, socket), [
    socket.connectionId, force ? 'force' : '', socket.userKey, DECISION_TTL_MS, ...roomPairs(packets, keys, 'user_disconnected', socket)
  ]) as RoomAnswer
}

/** A durable event argument (RedisStreams.durableArgument) starts with a NUL byte, as EMIT_FUNCTIONS reads it. */
function isDurable (packet: Buffer): boolean {
  return packet[0] === 0
}

/** The history and position keys a durable argument names (its first two `<bytes>:<item>` fields): the script declares them. */
export function durableKeys (argument: Buffer): string[] {
  const fields: string[] = []
  let at = 1
  while (fields.length < 2) {
    const colon = argument.indexOf(0x3a, at)
    const length = Number(argument.toString('latin1', at, colon))
    fields.push(argument.toString('utf8', colon + 1, colon + 1 + length))
    at = colon + 1 + length
  }
  return fields
}

/**
 * customer_presence to every console stream of a customer's scope, each on its stream's slot. A decision
 * may be told any number of times: each stream keeps only what is news (APPEND_CUSTOMER_PRESENCE).
 * Throws UnsettledError when a stream did not take it (the caller tells it again later).
 */
export async function tellConsoles (options: ShardedOptions, socket: ChatSocket, decision: string): Promise<void> {
  const { client, keys, packets } = options
  const event = decision.endsWith(':1') ? 'user_connected' : 'user_disconnected'
  const appends = packets(event, socket).filter(({ packet }) => isDurable(packet))
  const results = await Promise.allSettled(appends.map(async ({ topic, packet }) => await runScript(APPEND_CUSTOMER_PRESENCE, client,
    [keys.last(topic, socket.chatUuid, socket.userKey), ...durableKeys(packet)], [decision, DECISION_TTL_MS, keys.channel(topic), packet])))
  const failed = results.find((result) => result.status === 'rejected')
  if (failed !== undefined) throw new UnsettledError('customer_presence', failed.reason)
}

/**
 * Presence writes on a Redis Cluster, one slot per script. A chat socket: the node's hash first (so a
 * sweep can undo what follows), then the decision and its user_connected/user_disconnected on the chat's
 * slot, then (a customer's decision) customer_presence to each console stream, then after a leave the
 * node's hash. Until the consoles took a decision it stays owed and the node's hash keeps the socket:
 * a retry, or a survivor sweeping this node, tells them again.
 */
export class ShardedWrites implements PresenceWrites {
  /** Per socket, the decision the consoles were not told of yet. */
  readonly #owed = new Map<string, string>()

  constructor (readonly options: ShardedOptions) {}

  async join (connectionId: string, holding: ChatHolding, cap: number, force: boolean): Promise<number> {
    const { client, keys, nodeId, packets } = this.options
    const socket = holding.socket
    await client.hset(keys.sockets(nodeId), connectionId, holding.json)
    const [outcome, decision] = await runScript(JOIN_ROOM, client, roomKeys(keys, socket), [
      connectionId, holding.json, cap, force ? 'force' : '', socket.userKey, DECISION_TTL_MS, ...roomPairs(packets, keys, 'user_connected', socket)
    ]) as RoomAnswer
    if (outcome === REFUSED) {
      await this.#forget(connectionId)
      return REFUSED
    }
    if (outcome === ANNOUNCED && decision !== '') this.#owed.set(connectionId, decision)
    return outcome
  }

  async leave (connectionId: string, holding: ChatHolding, force: boolean): Promise<boolean> {
    const [announced, decision] = await leaveRoom(this.options, holding.socket, force)
    if (announced === 1 && decision !== '') this.#owed.set(connectionId, decision)
    return announced === 1
  }

  async settle (connectionId: string, holding: ChatHolding, present: boolean): Promise<void> {
    const decision = this.#owed.get(connectionId)
    if (decision !== undefined) {
      await tellConsoles(this.options, holding.socket, decision)
      this.#owed.delete(connectionId)
    }
    if (present) return
    const { client, keys, nodeId } = this.options
    try {
      await client.hdel(keys.sockets(nodeId), connectionId)
    } catch (error) {
      throw new UnsettledError('leave', error)
    }
  }

  async addSession (connectionId: string, holding: ConsoleHolding, cap: number): Promise<number> {
    const { client, keys, nodeId } = this.options
    await client.hset(keys.sockets(nodeId), connectionId, holding.json)
    const outcome = Number(await ADD_SESSION_SHARDED.run(client, [holding.operator, keys.consoles], [connectionId, holding.session, cap]))
    if (outcome === REFUSED) await this.#forget(connectionId)
    return outcome
  }

  async removeSession (connectionId: string, holding: ConsoleHolding): Promise<void> {
    const { client, keys, nodeId } = this.options
    await REMOVE_SESSION_SHARDED.run(client, [holding.operator, keys.consoles], [connectionId])
    await client.hdel(keys.sockets(nodeId), connectionId)
  }

  /** A refused socket's holding: a leftover is harmless (a sweep finds nothing of it to undo), so it is only logged. */
  async #forget (connectionId: string): Promise<void> {
    const { client, keys, nodeId, log } = this.options
    await client.hdel(keys.sockets(nodeId), connectionId).catch((error: unknown) => {
      log.warn({ err: error, connectionId }, 'presence: a refused socket stays in this node\'s hash until the node leaves')
    })
  }
}
