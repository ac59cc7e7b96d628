import { EventEmitter } from 'node:events'
import type { Cluster, Redis } from 'ioredis'
import { SLOTS, slotOf } from './cluster-slot.js'
import { listen, type RedisAddress, type RedisLogger } from './redis.js'

/** What RedisBus needs of its subscribing side: one ioredis connection, or the shards of a cluster. */
export interface SubscriberConnection {
  readonly status: string
  subscribe: (...channels: string[]) => Promise<unknown>
  unsubscribe: (...channels: string[]) => Promise<unknown>
  ping: () => Promise<unknown>
  disconnect: (reconnect?: boolean) => void
  /** Sharded: channels from `name(0, 1, …)`, one in a slot of each master, to probe every subscription. */
  probeChannels?: (name: (index: number) => string) => string[]
  on: (event: string, listener: (...args: any[]) => void) => unknown
  off: (event: string, listener: (...args: any[]) => void) => unknown
}

/** Replies meaning the slot is elsewhere now (or moving): the topology is read again. */
const MOVING = /^(MOVED|ASK|TRYAGAIN|CLUSTERDOWN)\b/
const REFRESH_RETRY_MS = 250

/**
 * Sharded pub/sub on a Redis Cluster (SSUBSCRIBE): one connection per master, each subscribing the
 * channels of the slots it serves. It looks like one subscriber connection to RedisBus: 'ready' once
 * every master's connection is up (the bus then subscribes every topic again), 'close' when any of
 * them drops, or a slot moved (a MOVED answer, or the `sunsubscribe` Redis pushes when a slot migrates
 * or its master fails over), so the bus turns down, resubscribes and repairs from the streams.
 */
export class ShardedSubscriber extends EventEmitter implements SubscriberConnection {
  status: 'connecting' | 'ready' | 'end' = 'connecting'
  /** Per slot, the address (`host:port`) of the master serving it. */
  #owners: string[] = []
  readonly #shards = new Map<string, { redis: Redis, detach: Array<() => void> }>()
  #refreshTimer: NodeJS.Timeout | undefined
  #refreshing = false
  #refreshAgain = false

  constructor (
    readonly cluster: Cluster,
    readonly connect: (address: RedisAddress) => Redis,
    readonly log: RedisLogger,
    /** How often the slot map is read again even when nothing said it changed. */
    readonly refreshIntervalMs = 5000
  ) {
    super()
    this.#scheduleRefresh(0)
  }

  async subscribe (...channels: string[]): Promise<unknown> {
    return await this.#bySlot('ssubscribe', channels)
  }

  async unsubscribe (...channels: string[]): Promise<unknown> {
    return await this.#bySlot('sunsubscribe', channels)
  }

  async ping (): Promise<unknown> {
    return await Promise.all([...this.#shards.values()].map(async ({ redis }) => await redis.ping()))
  }

  probeChannels (name: (index: number) => string): string[] {
    const channels: string[] = []
    for (const master of new Set(this.#owners)) {
      for (let index = 0; index < 100_000; index++) {
        const channel = name(index)
        if (this.#owners[slotOf(channel)] !== master) continue
        channels.push(channel)
        break
      }
    }
    return channels
  }

  /** Drops every shard's connection; with `reconnect`, they come back (and the bus resubscribes). */
  disconnect (reconnect = false): void {
    if (!reconnect) {
      this.status = 'end'
      clearTimeout(this.#refreshTimer)
    }
    for (const { redis } of this.#shards.values()) redis.disconnect(reconnect)
    if (!reconnect) this.#closeShards([...this.#shards.keys()])
  }

  async quit (): Promise<void> {
    this.disconnect(false)
  }

  /** One SSUBSCRIBE (or SUNSUBSCRIBE) per slot, on the master serving it. */
  async #bySlot (command: 'ssubscribe' | 'sunsubscribe', channels: string[]): Promise<void> {
    const groups = new Map<number, string[]>()
    for (const channel of channels) {
      const slot = slotOf(channel)
      const group = groups.get(slot)
      if (group === undefined) groups.set(slot, [channel])
      else group.push(channel)
    }
    await Promise.all([...groups].map(async ([slot, group]) => {
      const owner = this.#owners[slot]
      const shard = owner === undefined ? undefined : this.#shards.get(owner)
      if (shard === undefined || shard.redis.status !== 'ready') {
        // Not subscribed now: the 'ready' after the next refresh subscribes every channel the bus holds.
        if (command === 'ssubscribe') this.#lost('no connection to the master of a slot')
        return
      }
      try {
        await shard.redis[command](...group)
      } catch (error) {
        if (!(error instanceof Error) || !MOVING.test(error.message)) throw error
        this.#lost(`${command}: ${error.message}`)
      }
    }))
  }

  /** Some subscription may be gone: tell the bus (once), and read the slot map again. */
  #lost (why: string): void {
    if (this.status === 'end') return
    if (this.status === 'ready') {
      this.status = 'connecting'
      this.log.warn({ why }, 'redis cluster subscriber: a shard was lost or a slot moved: resubscribing')
      this.emit('close')
    }
    this.#scheduleRefresh(0)
  }

  #scheduleRefresh (ms: number): void {
    if (this.status === 'end') return
    clearTimeout(this.#refreshTimer)
    this.#refreshTimer = setTimeout(() => { void this.#refresh() }, ms)
    this.#refreshTimer.unref()
  }

  async #refresh (): Promise<void> {
    if (this.#refreshing) {
      this.#refreshAgain = true
      return
    }
    this.#refreshing = true
    try {
      do {
        this.#refreshAgain = false
        await this.#refreshOnce()
      } while (this.#refreshAgain && this.status !== 'end')
    } finally {
      this.#refreshing = false
    }
  }

  async #refreshOnce (): Promise<void> {
    let owners: string[]
    try {
      owners = await this.#readSlots()
    } catch (error) {
      this.#lost(`slot map unreadable: ${(error as Error).message}`)
      this.#scheduleRefresh(REFRESH_RETRY_MS)
      return
    }
    if (this.status === 'end') return
    const changed = owners.some((owner, slot) => owner !== this.#owners[slot])
    if (changed && this.status === 'ready') this.#lost('the slot map changed')
    this.#owners = owners
    const masters = new Set(owners)
    this.#closeShards([...this.#shards.keys()].filter((address) => !masters.has(address)))
    for (const address of masters) {
      if (!this.#shards.has(address)) this.#openShard(address)
    }
    this.#readyIfAll()
    this.#scheduleRefresh(this.status === 'ready' ? this.refreshIntervalMs : REFRESH_RETRY_MS)
  }

  /** CLUSTER SLOTS: ranges and their master; every slot must be served. */
  async #readSlots (): Promise<string[]> {
    const ranges = await this.cluster.cluster('SLOTS')
    const owners = new Array<string>(SLOTS)
    for (const [start, end, master] of ranges) {
      if (master !== undefined) owners.fill(`${master[0]}:${master[1]}`, start, end + 1)
    }
    for (let slot = 0; slot < SLOTS; slot++) {
      if (owners[slot] === undefined) throw new Error(`slot ${slot} has no master`)
    }
    return owners
  }

  #openShard (address: string): void {
    const split = address.lastIndexOf(':')
    const redis = this.connect({ host: address.slice(0, split), port: Number(address.slice(split + 1)) })
    const detach = [
      listen(redis, 'ready', () => this.#readyIfAll()),
      listen(redis, 'close', () => this.#lost(`connection to ${address} closed`)),
      listen(redis, 'moved', () => this.#lost(`${address} moved a slot (sunsubscribe or MOVED)`)),
      listen(redis, 'error', (error: Error) => this.emit('error', error)),
      listen(redis, 'smessageBuffer', (channel: Buffer, message: Buffer) => this.emit('messageBuffer', channel, message))
    ]
    this.#shards.set(address, { redis, detach })
  }

  #closeShards (addresses: string[]): void {
    for (const address of addresses) {
      const shard = this.#shards.get(address)
      if (shard === undefined) continue
      this.#shards.delete(address)
      for (const detach of shard.detach) detach()
      shard.redis.on('error', () => {})
      shard.redis.disconnect()
    }
  }

  #readyIfAll (): void {
    if (this.status !== 'connecting' || this.#owners.length === 0 || this.#shards.size === 0) return
    for (const { redis } of this.#shards.values()) if (redis.status !== 'ready') return
    this.status = 'ready'
    this.emit('ready')
  }
}
