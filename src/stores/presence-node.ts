import type { Metrics } from '../metrics.js'
import type { ChatSocket, PresenceEvent, PresencePackets } from './presence.js'
import { EMIT } from './streams-redis.js'
import { ALIVE, DEAD_NODES, HEARTBEAT, SWEEP, SWEPT, TOMBSTONE_MS } from './presence-scripts.js'
import { tag } from './cluster-slot.js'
import type { LuaScript, RedisCommands, RedisLogger } from './redis.js'
import { Topic } from '../protocol/routing.js'

/**
 * Where presence lives in Redis, under `<prefix>presence:` (see RedisPresence): every key, once. Sharded
 * (a cluster), each script's keys share a hash tag: a chat's under `{chat:<uuid>}` (its stream's and
 * channel's slot), a node's under `{node:<id>}`, console sessions under `{consoles}`; the rest as named.
 */
export class PresenceKeys {
  readonly nodes: string
  readonly consoles: string
  readonly nodePrefix: string
  readonly #base: string

  constructor (readonly prefix: string, readonly sharded = false) {
    const base = `${prefix}presence:`
    this.#base = base
    this.nodes = `${base}nodes`
    this.consoles = sharded ? `${base}{consoles}:sessions` : `${base}consoles`
    this.nodePrefix = `${base}node:`
  }

  /** The set of a user's socket ids in a chat, over every node. */
  room (chatUuid: string, userKey: string): string {
    return this.sharded ? `${this.#chat(chatUuid)}:room:${encodeURIComponent(userKey)}` : roomKey(this.prefix, chatUuid, userKey)
  }

  /** A chat's customers with a socket there, over every node: room key → the holding of one of its sockets. */
  customers (chatUuid: string): string {
    return this.sharded ? `${this.#chat(chatUuid)}:customers` : `${this.prefix}presence:customers:${encodeURIComponent(chatUuid)}`
  }

  /** Sharded: a chat's customers' latest decisions, user key → `<seq>:<1|0>` (see presence-scripts-sharded). */
  decisions (chatUuid: string): string {
    return `${this.#chat(chatUuid)}:decisions`
  }

  /** The set of an operator's console socket ids, over every node. */
  operator (operatorId: string): string {
    return this.sharded ? `${this.#base}{consoles}:operator:${encodeURIComponent(operatorId)}` : operatorKey(this.prefix, operatorId)
  }

  node (node: string): string {
    return this.sharded ? `${this.#base}${tag(`node:${node}`)}` : this.nodePrefix + node
  }

  sockets (node: string): string {
    return `${this.node(node)}:sockets`
  }

  swept (node: string): string {
    return `${this.node(node)}:swept`
  }

  /** Sharded: held by the survivor sweeping a node, with a TTL (a sweeper that dies is replaced). */
  lease (node: string): string {
    return `${this.node(node)}:sweeping`
  }

  /** Sharded: the last decision about a customer's room appended to a console stream, in that stream's slot. */
  last (topic: string, chatUuid: string, userKey: string): string {
    return `${this.#base}${tag(topic)}:last:${encodeURIComponent(chatUuid)}:${encodeURIComponent(userKey)}`
  }

  /** A topic's bus channel (as RedisBus names it). */
  channel (topic: string): string {
    return this.sharded ? this.prefix + tag(topic) : this.prefix + topic
  }

  /** The raw uuid inside the tag, as the chat's channel and stream keys carry it: the same slot. */
  #chat (chatUuid: string): string {
    return `${this.#base}${tag(Topic.chat(chatUuid))}`
  }
}

export function roomKey (prefix: string, chatUuid: string, userKey: string): string {
  return `${prefix}presence:room:${encodeURIComponent(chatUuid)}:${encodeURIComponent(userKey)}`
}

export function operatorKey (prefix: string, operatorId: string): string {
  return `${prefix}presence:operator:${encodeURIComponent(operatorId)}`
}

/**
 * A socket's holding in its node's hash: a chat socket names its room set, a console its operator set.
 * A customer's also names its chat's customer index and carries the scope its customer_presence goes to.
 */
export interface StoredChatHolding {
  room: string
  chat: string
  userKey: string
  user: ChatSocket['user']
  customers?: string
  scope?: ChatSocket['customerScope']
}

export function chatSocketOf (connectionId: string, json: string): ChatSocket | undefined {
  const holding = JSON.parse(json) as Partial<StoredChatHolding>
  if (typeof holding.room !== 'string' || holding.chat === undefined || holding.userKey === undefined || holding.user === undefined) return undefined
  const socket: ChatSocket = { chatUuid: holding.chat, userKey: holding.userKey, connectionId, user: holding.user }
  if (holding.scope !== undefined) socket.customerScope = holding.scope
  return socket
}

/** Script arguments may carry packets: ioredis sends a Buffer as it is. */
export async function runScript (script: LuaScript, client: RedisCommands, keys: string[], args: Array<string | number | Buffer>): Promise<unknown> {
  return await script.run(client, keys, args as Array<string | number>)
}

/** Channel and packet pairs of a presence event, as script arguments (the packets function turned durable ones into arguments). */
export function packetArgs (packets: PresencePackets, prefix: string, event: PresenceEvent, socket: ChatSocket): Array<string | Buffer> {
  return packets(event, socket).flatMap(({ topic, packet }) => [prefix + topic, packet])
}

/** What a heartbeat found: see NodePresence.heartbeat. */
export type HeartbeatState = 'alive' | 'lost' | 'swept' | 'sweeping'

/** This node in the cluster's presence: PresenceNode on one Redis, ShardedPresenceNode on a cluster. */
export interface NodePresence {
  /**
   * Renews the heartbeat: 'alive', or the key was gone ('lost': Redis lost it; 'swept': a survivor swept
   * us, write everything back; 'sweeping': a survivor is sweeping us now, the key stays gone until it is done).
   */
  heartbeat: () => Promise<HeartbeatState>
  /** Sweeps every node whose heartbeat expired. */
  sweepDead: () => Promise<void>
  /** Removes one node's sockets from presence, announcing each user whose last socket went with it, once. */
  sweep: (node: string, mode: 'dead' | 'self') => Promise<void>
}

export interface PresenceNodeOptions {
  client: RedisCommands
  keys: PresenceKeys
  nodeId: string
  ttlMs: number
  packets: PresencePackets
  metrics: Metrics
  log: RedisLogger
}

/**
 * This node as the cluster's presence sees it: its heartbeat key, and the sweep that removes a node's
 * sockets in one step (a dead node's by a survivor, exactly once; its own on close), announcing every
 * user whose last socket went with it.
 */
export class PresenceNode implements NodePresence {
  constructor (readonly options: PresenceNodeOptions) {}

  async heartbeat (): Promise<HeartbeatState> {
    const { client, keys, nodeId, ttlMs } = this.options
    const state = await HEARTBEAT.run(client, [keys.nodes, keys.node(nodeId), keys.swept(nodeId)], [nodeId, ttlMs])
    return state === ALIVE ? 'alive' : state === SWEPT ? 'swept' : 'lost'
  }

  async sweepDead (): Promise<void> {
    const { client, keys, nodeId } = this.options
    const dead = await DEAD_NODES.run(client, [keys.nodes], [keys.nodePrefix, nodeId])
    for (const node of Array.isArray(dead) ? dead as string[] : []) await this.sweep(node, 'dead')
  }

  /** Sweeps one node (see SWEEP); its users' user_disconnected packets are built here, published there. */
  async sweep (node: string, mode: 'dead' | 'self'): Promise<void> {
    const { client, keys, packets, metrics, log } = this.options
    const holdings = await client.hgetall(keys.sockets(node))
    const farewells: Buffer[] = []
    const add = (item: string | Buffer): void => {
      const bytes = typeof item === 'string' ? Buffer.from(item) : item
      farewells.push(Buffer.from(`${bytes.length}:`), bytes)
    }
    for (const [connectionId, json] of Object.entries(holdings)) {
      const socket = chatSocketOf(connectionId, json)
      if (socket === undefined) continue
      const args = packetArgs(packets, keys.prefix, 'user_disconnected', socket)
      add(connectionId)
      add(String(args.length / 2))
      for (const item of args) add(item)
    }
    const sweepKeys = [keys.nodes, keys.consoles, keys.sockets(node), keys.node(node), keys.swept(node)]
    const [announced, unannounced] = await runScript(SWEEP, client, sweepKeys, [node, mode, TOMBSTONE_MS, Buffer.concat(farewells)]) as [number, string[]]
    if (announced < 0) return
    // Holdings written between the read and the sweep (none expected): announced after it.
    for (const json of unannounced) {
      const socket = chatSocketOf('', json)
      if (socket === undefined) continue
      await runScript(EMIT, client, [], packetArgs(packets, keys.prefix, 'user_disconnected', socket))
    }
    const departures = announced + unannounced.length
    if (departures > 0) metrics.eventsAccepted.inc({ source: 'presence' }, departures)
    log.info({ node, departures }, mode === 'dead' ? 'dead node swept from presence' : 'node left presence')
  }
}
