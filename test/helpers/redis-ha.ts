import { spawn, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { freePort } from './process.js'
import type { Tap } from './relay.js'

export interface Address {
  host: string
  port: number
}

/** One process of a topology: `pid` is what teardown kills. */
export interface RedisProcess {
  label: string
  address: Address
  pid: () => number | undefined
  running: () => boolean
  /** Last lines it printed, for failure messages. */
  output: () => string
}

const HOST = '127.0.0.1'
const LAUNCH_TIMEOUT_MS = 10_000
const POLL_MS = 100
const OUTPUT_TAIL = 4_000
const SLOTS = 16_384

const sameAddress = (a: Address, b: Address): boolean => a.host === b.host && a.port === b.port
const addressList = (addresses: Address[]): string => addresses.map(({ host, port }) => `${host}:${port}`).join(',')
const newPrefix = (): string => `test-${randomUUID().slice(0, 8)}:`

/** A `redis-server` (or sentinel) with its config file in its own directory, rewritten on each launch. */
class ServerProcess implements RedisProcess {
  port = 0
  busPort = 0
  #child: ChildProcess | undefined
  #output = ''

  constructor (
    readonly label: string,
    readonly dir: string,
    readonly config: (server: ServerProcess) => string[],
    readonly ready = 'Ready to accept connections',
    readonly args: string[] = []
  ) {}

  get address (): Address { return { host: HOST, port: this.port } }
  pid (): number | undefined { return this.#child?.pid }
  output (): string { return this.#output }
  running (): boolean {
    return this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null
  }

  /** First start: fresh ports, and once more on fresh ones if somebody took a port before redis bound it. */
  async start (): Promise<void> {
    await mkdir(this.dir, { recursive: true })
    try {
      await this.#allocate()
      await this.launch()
    } catch (error) {
      await this.#allocate()
      await this.launch().catch((retryError: unknown) => {
        throw new AggregateError([error, retryError], `${this.label} did not start`)
      })
    }
  }

  async #allocate (): Promise<void> {
    this.port = await freePort()
    // The cluster bus defaults to port + 10000, past 65535 for most ephemeral ports: ask for its own.
    this.busPort = await freePort()
  }

  /** `extra` overrides the config file for this launch (a restarted primary coming back as a replica). */
  async launch (extra: string[] = []): Promise<void> {
    const file = join(this.dir, 'redis.conf')
    await writeFile(file, this.config(this).join('\n') + '\n')
    const child = spawn('redis-server', [file, ...this.args, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] })
    this.#child = child
    this.#output = ''
    const collect = (chunk: Buffer): void => { this.#output = (this.#output + chunk.toString()).slice(-OUTPUT_TAIL) }
    // Keep reading for the whole life of the process so a full pipe never blocks it.
    child.stdout?.on('data', collect)
    child.stderr?.on('data', collect)
    await new Promise<void>((resolve, reject) => {
      const settle = (error?: Error): void => {
        clearTimeout(timer)
        child.stdout?.off('data', onData)
        child.off('exit', onExit)
        child.off('error', settle)
        if (error === undefined) return resolve()
        child.kill('SIGKILL')
        reject(error)
      }
      const onData = (): void => { if (this.#output.includes(this.ready)) settle() }
      const onExit = (code: number | null, signal: string | null): void => {
        settle(new Error(`${this.label} exited (${code ?? signal ?? '?'}) on port ${this.port}: ${this.#output}`))
      }
      const timer = setTimeout(() => settle(new Error(`${this.label} did not start within ${LAUNCH_TIMEOUT_MS} ms: ${this.#output}`)), LAUNCH_TIMEOUT_MS)
      child.stdout?.on('data', onData)
      child.once('exit', onExit)
      child.once('error', settle)
    })
  }

  /** SIGKILL by PID; resolves once the process is gone. */
  async kill (): Promise<void> {
    const child = this.#child
    if (child === undefined || !this.running()) return
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
    child.kill('SIGKILL')
    await exited
  }
}

const serverConfig = (server: ServerProcess): string[] => [
  `port ${server.port}`, `bind ${HOST}`, `dir ${server.dir}`, 'daemonize no', 'logfile ""',
  'save ""', 'appendonly no',
  // The 7.0 default waits 5 s for more replicas before a diskless full sync.
  'repl-diskless-sync-delay 0'
]

/** A temp root for a topology, registered for teardown before anything starts so a failed start cleans up too. */
async function topology (t: Tap, name: string): Promise<{ root: string, processes: ServerProcess[] }> {
  const root = await mkdtemp(join(tmpdir(), `relay-${name}-`))
  const processes: ServerProcess[] = []
  t.teardown(async () => {
    await Promise.all(processes.map(async (server) => await server.kill()))
    await rm(root, { recursive: true, force: true })
  })
  return { root, processes }
}

function outputs (processes: RedisProcess[]): string {
  return processes.map((server) => `--- ${server.label} (${server.address.port}):\n${server.output().slice(-1_500)}`).join('\n')
}

/** One short-lived admin connection per call: nothing to leak, and a dead node fails fast instead of retrying. */
async function withClient<T> (address: Address, use: (client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis({
    ...address,
    lazyConnect: true,
    enableReadyCheck: false,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 2_000,
    commandTimeout: 2_000
  })
  // The failure reaches the caller through connect() or the command's promise.
  client.on('error', () => {})
  try {
    await client.connect()
    return await use(client)
  } finally {
    client.disconnect()
  }
}

async function send<T> (address: Address, command: string, ...args: Array<string | number | Buffer>): Promise<T> {
  return await withClient(address, async (client) => await client.call(command, ...args) as T)
}

function infoField (info: string, field: string): string | undefined {
  return new RegExp(`^${field}:(.*?)\\r?$`, 'm').exec(info)?.[1]
}

/** A probe's way to say what it saw instead of what it waits for. */
function notYet (reason: string): never {
  throw new Error(reason)
}

/**
 * Polls `probe` until it resolves; fails after `ms` with why it last threw (`notYet`, or an
 * unreachable node) and the processes' output.
 */
async function until<T> (probe: () => Promise<T>, ms: number, what: string, processes: RedisProcess[]): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    try {
      return await probe()
    } catch (error) {
      const last = error instanceof Error ? error.message : String(error)
      if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms (last: ${last})\n${outputs(processes)}`)
    }
    await sleep(POLL_MS)
  }
}

async function role (address: Address): Promise<string | undefined> {
  const reply = await send<unknown[]>(address, 'ROLE')
  return typeof reply[0] === 'string' ? reply[0] : undefined
}

async function replicaLinkUp (address: Address): Promise<void> {
  const status = infoField(await send<string>(address, 'INFO', 'replication'), 'master_link_status')
  if (status !== 'up') notYet(`${address.port} master_link_status:${status ?? 'none'}`)
}

// ---------------------------------------------------------------------------------------------------
// Sentinel

export interface SentinelOptions {
  name?: string
  downAfterMs?: number
  failoverTimeoutMs?: number
  /** Bound on the whole start, until every sentinel knows the replica and its two peers. */
  timeoutMs?: number
}

export interface SentinelRedis {
  name: string
  sentinels: Address[]
  /** `host:port,host:port,host:port` */
  sentinelsEnv: string
  /** The primary as a sentinel reports it. */
  primary: () => Promise<Address>
  /** SIGKILLs the current primary's process; resolves with its address once it is gone. */
  killPrimary: () => Promise<Address>
  /** Resolves with the new primary once every sentinel reports the same other address and it answers ROLE as master. */
  waitForFailover: (oldPrimary: Address, ms?: number) => Promise<Address>
  /** Starts the killed node again (empty) as a replica of the current primary; resolves once its link is up. */
  restartKilled: (ms?: number) => Promise<void>
  prefix: () => string
  processes: RedisProcess[]
}

/**
 * A primary, one replica and three sentinels (quorum 2) on free loopback ports, each in its own
 * directory of a temporary root; all SIGKILLed and the root removed in teardown.
 */
export async function startSentinelRedis (t: Tap, options: SentinelOptions = {}): Promise<SentinelRedis> {
  const name = options.name ?? 'relay-primary'
  const timeoutMs = options.timeoutMs ?? 20_000
  const { root, processes } = await topology(t, 'sentinel')
  const primary = new ServerProcess('primary', join(root, 'primary'), serverConfig)
  const replica = new ServerProcess('replica', join(root, 'replica'), (server) =>
    [...serverConfig(server), `replicaof ${HOST} ${primary.port}`])
  const sentinels = [1, 2, 3].map((n) => new ServerProcess(`sentinel-${n}`, join(root, `sentinel-${n}`), (server) => [
    `port ${server.port}`, `bind ${HOST}`, `dir ${server.dir}`, 'daemonize no', 'logfile ""',
    `sentinel monitor ${name} ${HOST} ${primary.port} 2`,
    `sentinel down-after-milliseconds ${name} ${options.downAfterMs ?? 1_000}`,
    `sentinel failover-timeout ${name} ${options.failoverTimeoutMs ?? 3_000}`
  ], 'Sentinel ID is', ['--sentinel']))
  const servers = [primary, replica]
  processes.push(...servers, ...sentinels)

  await primary.start()
  await replica.start()
  // Started after the replica's link is up, so a sentinel's first INFO of the primary already lists it.
  await until(async () => await replicaLinkUp(replica.address), timeoutMs, 'replica link up', processes)
  await Promise.all(sentinels.map(async (sentinel) => await sentinel.start()))
  // Peers are found through hello messages every 2 s; without them there is no quorum to fail over.
  await until(async () => {
    const views = await Promise.all(sentinels.map(async (sentinel) => await sentinelMaster(sentinel.address, name)))
    const ready = views.every((view) => view.flags === 'master' && view['num-other-sentinels'] === '2' && view['num-slaves'] === '1')
    if (!ready) notYet(views.map((view) => `${view.flags} with ${view['num-slaves']} replicas, ${view['num-other-sentinels']} peers`).join('; '))
  }, timeoutMs, 'every sentinel knows the primary, its replica and two peers', processes)

  let killed: ServerProcess | undefined
  const askPrimary = async (sentinel: Address): Promise<Address> => {
    const reply = await send<[string, string] | null>(sentinel, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name)
    if (reply === null) throw new Error(`sentinel ${sentinel.port} does not know ${name}`)
    return { host: reply[0], port: Number(reply[1]) }
  }
  const currentPrimary = async (): Promise<Address> => {
    const errors: unknown[] = []
    for (const sentinel of sentinels) {
      try {
        return await askPrimary(sentinel.address)
      } catch (error) {
        errors.push(error)
      }
    }
    throw new AggregateError(errors, 'no sentinel answered')
  }

  return {
    name,
    sentinels: sentinels.map((sentinel) => sentinel.address),
    sentinelsEnv: addressList(sentinels.map((sentinel) => sentinel.address)),
    primary: currentPrimary,
    killPrimary: async () => {
      const address = await currentPrimary()
      const server = servers.find((candidate) => sameAddress(candidate.address, address))
      if (server === undefined) throw new Error(`the sentinels report ${address.host}:${address.port}, none of ours`)
      await server.kill()
      killed = server
      return address
    },
    // Every sentinel, not one: a client asking a lagging sentinel would still be sent to the dead node.
    waitForFailover: async (oldPrimary, ms = 20_000) => await until(async () => {
      const reported = await Promise.all(sentinels.map(async (sentinel) => await askPrimary(sentinel.address)))
      const [first] = reported
      if (first === undefined || !reported.every((address) => sameAddress(address, first)) || sameAddress(first, oldPrimary)) {
        notYet(`sentinels report ${reported.map(({ port }) => port).join(', ')}`)
      }
      const now = await role(first)
      if (now !== 'master') notYet(`${first.port} is ${now ?? '?'}`)
      return first
    }, ms, `failover away from ${oldPrimary.port}`, processes),
    restartKilled: async (ms = 10_000) => {
      const server = killed
      if (server === undefined) throw new Error('no node was killed')
      const { host, port } = await currentPrimary()
      await server.launch(['--replicaof', host, String(port)])
      killed = undefined
      await until(async () => await replicaLinkUp(server.address), ms, `${server.label} replicating again`, processes)
    },
    prefix: newPrefix,
    processes
  }
}

async function sentinelMaster (sentinel: Address, name: string): Promise<Record<string, string>> {
  const reply = await send<string[]>(sentinel, 'SENTINEL', 'MASTER', name)
  const fields: Record<string, string> = {}
  for (let i = 0; i + 1 < reply.length; i += 2) fields[reply[i] as string] = reply[i + 1] as string
  return fields
}

// ---------------------------------------------------------------------------------------------------
// Cluster

export interface RedisClusterOptions {
  nodeTimeoutMs?: number
  /** Bound on the whole start, until every node says cluster_state:ok and every replica's link is up. */
  timeoutMs?: number
}

export interface ClusterMaster extends Address {
  id: string
  /** Inclusive ranges. */
  slots: Array<[number, number]>
}

export interface ClusterReplica extends Address {
  id: string
  masterId: string
}

export interface RedisCluster {
  /** All six nodes, masters and replicas, as they were started. */
  nodes: Address[]
  /** The masters as created: `host:port,host:port,host:port` */
  nodesEnv: string
  /** Masters not flagged failed, as the first live node sees them. */
  masters: () => Promise<ClusterMaster[]>
  replicas: () => Promise<ClusterReplica[]>
  /** SIGKILL; resolves once the process is gone. */
  killMaster: (address: Address) => Promise<void>
  /** Every live node says cluster_state:ok and agrees that live masters serve all 16384 slots. */
  waitForHealthy: (ms?: number) => Promise<void>
  /** `CLUSTER FAILOVER` on a replica (graceful unless `mode`); resolves once it is master and the cluster is healthy. */
  failover: (replica: Address, options?: { mode?: 'FORCE' | 'TAKEOVER', ms?: number }) => Promise<void>
  /** Moves a slot and its keys the way redis-cli --cluster reshard does; resolves with the number of keys moved. */
  migrateSlot: (slot: number, from: Address, to: Address) => Promise<number>
  /** Starts a killed node again on its port: its nodes.conf makes it a replica of whoever took over. */
  restartKilled: (address: Address, ms?: number) => Promise<void>
  slotOf: (key: string | Buffer) => number
  prefix: () => string
  processes: RedisProcess[]
}

interface NodeLine extends Address {
  id: string
  flags: string[]
  masterId: string
  slots: Array<[number, number]>
}

const MIGRATE_BATCH = 100
const MIGRATE_TIMEOUT_MS = 5_000

/**
 * Three masters with one replica each (`redis-cli --cluster create --cluster-replicas 1`) on free
 * loopback ports; all SIGKILLed and the temporary root removed in teardown.
 */
export async function startRedisCluster (t: Tap, options: RedisClusterOptions = {}): Promise<RedisCluster> {
  const timeoutMs = options.timeoutMs ?? 30_000
  const { root, processes } = await topology(t, 'cluster')
  const servers = [1, 2, 3, 4, 5, 6].map((n) => new ServerProcess(`node-${n}`, join(root, `node-${n}`), (server) => [
    ...serverConfig(server),
    'cluster-enabled yes', `cluster-config-file ${join(server.dir, 'nodes.conf')}`, `cluster-port ${server.busPort}`,
    `cluster-node-timeout ${options.nodeTimeoutMs ?? 1_000}`,
    // A replica may always take over: the default factor can refuse one whose link dropped a while ago.
    'cluster-replica-validity-factor 0'
  ]))
  processes.push(...servers)
  await Promise.all(servers.map(async (server) => await server.start()))
  await createCluster(servers.map((server) => server.address), timeoutMs)

  const live = (): ServerProcess[] => servers.filter((server) => server.running())
  const view = async (): Promise<NodeLine[]> => {
    const errors: unknown[] = []
    for (const server of live()) {
      try {
        return parseNodes(await send<string>(server.address, 'CLUSTER', 'NODES'))
      } catch (error) {
        errors.push(error)
      }
    }
    throw new AggregateError(errors, 'no live cluster node answered')
  }
  const masters = async (): Promise<ClusterMaster[]> => (await view())
    .filter((node) => node.flags.includes('master') && !failed(node))
    .map(({ host, port, id, slots }) => ({ host, port, id, slots }))
  const replicas = async (): Promise<ClusterReplica[]> => (await view())
    .filter((node) => node.flags.includes('slave') && !failed(node))
    .map(({ host, port, id, masterId }) => ({ host, port, id, masterId }))

  const healthy = async (): Promise<void> => {
    const nodes = live()
    const livePorts = new Set(nodes.map((server) => server.port))
    const layouts = await Promise.all(nodes.map(async ({ address }) => {
      const state = infoField(await send<string>(address, 'CLUSTER', 'INFO'), 'cluster_state')
      if (state !== 'ok') notYet(`${address.port} cluster_state:${state ?? '?'}`)
      const owners = parseNodes(await send<string>(address, 'CLUSTER', 'NODES'))
        .filter((node) => node.flags.includes('master') && !failed(node) && node.slots.length > 0)
      const dead = owners.find((node) => !livePorts.has(node.port))
      if (dead !== undefined) notYet(`${address.port} sees slots on dead ${dead.port}`)
      const served = owners.reduce((sum, node) => sum + node.slots.reduce((count, [start, end]) => count + end - start + 1, 0), 0)
      if (served !== SLOTS) notYet(`${address.port} sees ${served} slots served`)
      return owners.map((node) => `${node.port}:${node.slots.map((range) => range.join('-')).join(' ')}`).sort().join('|')
    }))
    if (new Set(layouts).size !== 1) notYet(`the nodes disagree on who serves what: ${layouts.join(' / ')}`)
  }
  const waitForHealthy = async (ms = 15_000): Promise<void> => {
    await until(healthy, ms, 'cluster healthy on every live node', processes)
  }

  await until(async () => {
    await healthy()
    const linked = await replicas()
    if (linked.length !== 3) notYet(`${linked.length} replicas`)
    await Promise.all(linked.map(async (replica) => await replicaLinkUp(replica)))
  }, timeoutMs, 'cluster_state:ok everywhere and every replica linked', processes)
  const created = await masters()

  return {
    nodes: servers.map((server) => server.address),
    nodesEnv: addressList(created),
    masters,
    replicas,
    killMaster: async (address) => {
      const server = servers.find((candidate) => sameAddress(candidate.address, address))
      if (server === undefined) throw new Error(`${address.host}:${address.port} is none of ours`)
      await server.kill()
    },
    waitForHealthy,
    failover: async (replica, { mode, ms = 15_000 } = {}) => {
      await send(replica, 'CLUSTER', 'FAILOVER', ...(mode === undefined ? [] : [mode]))
      const deadline = Date.now() + ms
      await until(async () => {
        const now = await role(replica)
        if (now !== 'master') notYet(`${replica.port} is ${now ?? '?'}`)
      }, ms, `${replica.port} promoted`, processes)
      await waitForHealthy(Math.max(deadline - Date.now(), POLL_MS))
    },
    migrateSlot: async (slot, from, to) => await migrateSlot(slot, from, to, await masters()),
    restartKilled: async (address, ms = 15_000) => {
      const server = servers.find((candidate) => sameAddress(candidate.address, address))
      if (server === undefined) throw new Error(`${address.host}:${address.port} is none of ours`)
      await server.launch()
      await until(async () => {
        if (await role(server.address) !== 'slave') notYet(`${server.port} is not a replica yet`)
        await replicaLinkUp(server.address)
      }, ms, `${server.label} back as a replica`, processes)
      await waitForHealthy(ms)
    },
    slotOf: clusterSlot,
    prefix: newPrefix,
    processes
  }
}

async function createCluster (addresses: Address[], ms: number): Promise<void> {
  const args = ['--cluster', 'create', ...addresses.map(({ host, port }) => `${host}:${port}`), '--cluster-replicas', '1', '--cluster-yes']
  const child = spawn('redis-cli', args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const timer = setTimeout(() => child.kill('SIGKILL'), ms)
  const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => child.once('exit', (...exit) => resolve(exit)))
  clearTimeout(timer)
  if (code !== 0) throw new Error(`redis-cli --cluster create failed (${code ?? signal ?? '?'}): ${output}`)
}

function failed (node: NodeLine): boolean {
  return node.flags.some((flag) => flag === 'fail' || flag === 'fail?' || flag === 'noaddr' || flag === 'handshake')
}

/** `<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot>...` */
function parseNodes (text: string): NodeLine[] {
  return text.split('\n').filter((line) => line.trim() !== '').map((line) => {
    const [id = '', endpoint = '', flags = '', masterId = '', , , , , ...slotFields] = line.trim().split(' ')
    const hostPort = endpoint.split('@')[0] ?? ''
    const colon = hostPort.lastIndexOf(':')
    const slots = slotFields
      // `[slot->-id]` and `[slot-<-id]` are migrations in progress, not ownership.
      .filter((field) => !field.startsWith('['))
      .map((field): [number, number] => {
        const [start, end = start] = field.split('-').map(Number)
        return [start ?? 0, end ?? 0]
      })
    return { id, host: hostPort.slice(0, colon), port: Number(hostPort.slice(colon + 1)), flags: flags.split(','), masterId, slots }
  })
}

/** The documented live resharding steps; the target learns ownership first so redirects never point nowhere. */
async function migrateSlot (slot: number, from: Address, to: Address, masters: ClusterMaster[]): Promise<number> {
  const [fromId, toId] = await Promise.all([send<string>(from, 'CLUSTER', 'MYID'), send<string>(to, 'CLUSTER', 'MYID')])
  await send(to, 'CLUSTER', 'SETSLOT', slot, 'IMPORTING', fromId)
  await send(from, 'CLUSTER', 'SETSLOT', slot, 'MIGRATING', toId)
  const moved = await withClient(from, async (client) => {
    let count = 0
    for (;;) {
      // Buffers, so binary keys survive the round trip.
      const keys = await client.callBuffer('CLUSTER', 'GETKEYSINSLOT', slot, MIGRATE_BATCH) as Buffer[]
      if (keys.length === 0) return count
      await client.call('MIGRATE', to.host, to.port, '', 0, MIGRATE_TIMEOUT_MS, 'KEYS', ...keys)
      count += keys.length
    }
  })
  const others = masters.filter((master) => !sameAddress(master, from) && !sameAddress(master, to))
  for (const node of [to, from, ...others]) await send(node, 'CLUSTER', 'SETSLOT', slot, 'NODE', toId)
  return moved
}

/** CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with. */
function crc16 (bytes: Uint8Array): number {
  let crc = 0
  for (const byte of bytes) {
    crc ^= byte << 8
    for (let bit = 0; bit < 8; bit++) crc = (crc & 0x8000) !== 0 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
  }
  return crc
}

/**
 * The slot Redis Cluster puts a key in: only the part between the first `{` and the next `}` is hashed
 * when that part is not empty (`{user}:a` and `{user}:b` share a slot; `{}x` hashes whole).
 */
export function clusterSlot (key: string | Buffer): number {
  const bytes = typeof key === 'string' ? Buffer.from(key) : key
  const open = bytes.indexOf(0x7b)
  const close = open === -1 ? -1 : bytes.indexOf(0x7d, open + 1)
  const hashed = close > open + 1 ? bytes.subarray(open + 1, close) : bytes
  return crc16(hashed) % SLOTS
}
