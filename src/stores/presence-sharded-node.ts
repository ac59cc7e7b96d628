import type { Metrics } from '../metrics.js'
import { chatSocketOf, type HeartbeatState, type NodePresence } from './presence-node.js'
import { ALIVE, BATCH, SWEPT, TOMBSTONE_MS } from './presence-scripts.js'
import {
  ALREADY_SWEPT, CLAIM_SWEEP, CLAIMED, FINISH_SWEEP, FINISHED, HEARTBEAT_NODE, LEASE_LOST, REMOVE_SESSION_SHARDED, SWEEP_LEASE_MS, SWEEPING
} from './presence-scripts-sharded.js'
import { leaveRoom, tellConsoles, type ShardedOptions } from './presence-sharded.js'
import type { StoredConsoleHolding } from './presence-sockets.js'

export interface ShardedNodeOptions extends ShardedOptions {
  ttlMs: number
  metrics: Metrics
}

/** Sockets a node may still write while it is swept: the sweep reads its hash again, this many times at most. */
const SWEEP_ROUNDS = 5

/**
 * This node on a Redis Cluster. Its key, swept marker and sweep lease share the node's slot; the nodes
 * set has its own. A sweep is socket by socket (each socket's room is on its chat's slot): a survivor
 * takes a lease (only once the node's key is gone, and renewed as it goes), runs LEAVE_ROOM for each chat
 * socket (only the run that removes a user's last socket announces, so even two sweepers announce each
 * departure once), tells the consoles, removes the socket from the node's hash, and marks the node swept
 * once that hash is empty. The node's own heartbeat waits while the lease is held.
 */
export class ShardedPresenceNode implements NodePresence {
  /** What the script found and no completed heartbeat reported yet: the marker it read is gone from Redis. */
  #unreported: 'lost' | 'swept' | undefined

  constructor (readonly options: ShardedNodeOptions) {}

  async heartbeat (): Promise<HeartbeatState> {
    const { client, keys, nodeId, ttlMs } = this.options
    const state = await HEARTBEAT_NODE.run(client, [keys.node(nodeId), keys.swept(nodeId), keys.lease(nodeId)], [ttlMs])
    if (state === SWEEPING) return 'sweeping'
    if (state === SWEPT) this.#unreported = 'swept'
    else if (state !== ALIVE) this.#unreported ??= 'lost'
    // After the key: a node in the set without one is dead.
    await client.sadd(keys.nodes, nodeId)
    const found = this.#unreported ?? 'alive'
    this.#unreported = undefined
    return found
  }

  async sweepDead (): Promise<void> {
    const { client, keys, nodeId } = this.options
    const others = (await client.smembers(keys.nodes)).filter((node) => node !== nodeId)
    const alive = await Promise.all(others.map(async (node) => await client.exists(keys.node(node))))
    for (const [index, node] of others.entries()) {
      if (alive[index] === 0) await this.sweep(node, 'dead')
    }
  }

  async sweep (node: string, mode: 'dead' | 'self'): Promise<void> {
    const { client, keys, metrics, log } = this.options
    const claimed = await this.#claim(node, mode)
    if (claimed === ALREADY_SWEPT) await client.srem(keys.nodes, node)
    if (claimed !== CLAIMED) return
    let departures = 0
    for (let round = 0; round < SWEEP_ROUNDS; round++) {
      const holdings = Object.entries(await client.hgetall(keys.sockets(node)))
      for (let start = 0; start < holdings.length; start += BATCH) {
        const announced = (await Promise.all(holdings.slice(start, start + BATCH).map(async ([connectionId, json]) =>
          await this.#sweepSocket(node, connectionId, json)))).filter((done) => done).length
        departures += announced
        if (announced > 0) metrics.eventsAccepted.inc({ source: 'presence' }, announced)
        // Renewed after each batch; lost: another survivor took over (what is done stays done).
        if (await this.#claim(node, mode) !== CLAIMED) return
      }
      const finished = Number(await FINISH_SWEEP.run(client,
        [keys.node(node), keys.sockets(node), keys.swept(node), keys.lease(node)], [mode, this.options.nodeId, TOMBSTONE_MS]))
      if (finished === LEASE_LOST) return
      if (finished === FINISHED) {
        await client.srem(keys.nodes, node)
        log.info({ node, departures }, mode === 'dead' ? 'dead node swept from presence' : 'node left presence')
        return
      }
    }
    log.warn({ node, departures }, 'presence sweep: the node kept writing sockets; the next heartbeat sweeps again')
  }

  async #claim (node: string, mode: 'dead' | 'self'): Promise<number> {
    const { client, keys, nodeId } = this.options
    return Number(await CLAIM_SWEEP.run(client, [keys.node(node), keys.swept(node), keys.lease(node)], [mode, nodeId, SWEEP_LEASE_MS]))
  }

  /** Counted, and thrown: the socket stays in the node's hash, and the next sweep tells the consoles again. */
  #unsettled (error: unknown): never {
    this.options.metrics.presenceFailures.inc({ operation: 'customer_presence' })
    throw error
  }

  /** Undoes one socket of a swept node; true when it announced a departure. */
  async #sweepSocket (node: string, connectionId: string, json: string): Promise<boolean> {
    const { client, keys } = this.options
    const socket = chatSocketOf(connectionId, json)
    let announced = false
    if (socket === undefined) {
      const holding = JSON.parse(json) as Partial<StoredConsoleHolding>
      if (typeof holding.console === 'string') await REMOVE_SESSION_SHARDED.run(client, [holding.console, keys.consoles], [connectionId])
    } else {
      const [outcome, decision] = await leaveRoom(this.options, socket, false)
      announced = outcome === 1
      // Told again even when this sweep announced nothing: the node may have died before telling the consoles.
      if (decision !== '') await tellConsoles(this.options, socket, decision).catch((error: unknown) => this.#unsettled(error))
    }
    await client.hdel(keys.sockets(node), connectionId)
    return announced
  }
}
