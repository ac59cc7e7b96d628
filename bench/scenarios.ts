import type { PostPlan, WorkloadSpec } from './messages.js'
import type { WireProtocol } from './ws-client.js'

export type SystemName = 'relay' | 'socketio' | 'ws' | 'wsCorked'
export type ScenarioName = 'a' | 'b' | 'c' | 'd' | 'e' | 'f' | 'g' | 'h'

export const SYSTEM_LABEL: Record<SystemName, string> = {
  relay: 'relay',
  socketio: 'Socket.IO 4 + redis-adapter',
  ws: 'raw ws',
  wsCorked: 'raw ws, corked per turn'
}

/**
 * Where the relay's nodes meet in a multi-node case: one private redis-server (REDIS_URL, no WAIT), or
 * a private Redis Cluster of 3 masters + 3 replicas (REDIS_CLUSTER_NODES: sharded pub/sub, a slot per
 * stream), each durable append WAITing for one replica (the cluster default) or for none.
 */
export type RedisMode = 'single' | 'cluster' | 'cluster-acks0'
export const REDIS_MODES: readonly RedisMode[] = ['single', 'cluster', 'cluster-acks0']
export const REDIS_MODE_LABEL: Record<RedisMode, string> = {
  single: 'one Redis',
  cluster: 'Redis Cluster 3 masters + 3 replicas, WAIT 1 replica',
  'cluster-acks0': 'Redis Cluster 3 masters + 3 replicas, no WAIT'
}
/**
 * The modes a scenario's relay rows run in when --redis-modes is not given: (b) on one Redis and on the
 * cluster (about 20 s more: the cluster's start and one row); the other scenarios on one Redis only.
 */
export const DEFAULT_REDIS_MODES: Partial<Record<ScenarioName, RedisMode[]>> = { b: ['single', 'cluster'] }
/** REDIS_REPLICA_ACKS each mode runs the relay with (set explicitly, whatever the caller's environment says). */
export const REDIS_MODE_ACKS: Record<RedisMode, number> = { single: 0, cluster: 1, 'cluster-acks0': 0 }

/** The wire protocol each system's clients speak. */
export const WIRE: Record<SystemName, WireProtocol> = { relay: 'relay', socketio: 'socketio', ws: 'ws', wsCorked: 'ws' }

/** The systems a scenario runs when `--systems` is not given: (g) is heavy, so the relay and its floor only. */
export const DEFAULT_SYSTEMS: Record<ScenarioName, SystemName[]> = {
  a: ['relay', 'socketio', 'ws', 'wsCorked'],
  b: ['relay', 'socketio', 'ws', 'wsCorked'],
  c: ['relay', 'socketio', 'ws', 'wsCorked'],
  d: ['relay', 'socketio', 'ws', 'wsCorked'],
  e: ['relay', 'socketio', 'ws', 'wsCorked'],
  // Recovery across nodes: raw ws has none to compare.
  f: ['relay', 'socketio'],
  g: ['relay', 'ws'],
  // Batch ingest is the relay's own route: the peers have nothing to compare.
  h: ['relay']
}

/** Every size is a flag of `npm run bench` (see bench/run.ts); these are the defaults. */
export interface BenchOptions {
  scenarios: ScenarioName[]
  /** Absent: each scenario's DEFAULT_SYSTEMS. */
  systems?: SystemName[]
  fanoutClients: number
  fanoutMessages: number
  rateClients: number
  /** Messages per second in (c); halved until raw ws keeps p99 under half the interval, if findRate. */
  rate: number
  rateSeconds: number
  findRate: boolean
  idleClients: number
  mixChats: number
  mixConsoles: number
  mixMessages: number
  /** Nodes in (e): 1 in the scenario; the smoke test runs it on 2. */
  mixNodes: number
  /** POSTs in flight in the as-fast-as-possible scenarios. */
  inflight: number
  /** One client in `sampleEvery` times POST → receive; the rest only count. */
  sampleEvery: number
  connectConcurrency: number
  /** Connection rounds, alternating prober and counter, so samplers sit all along the fan-out order. */
  connectPhases: number
  /** (f): customer sockets on node A, spread over `stormChats` chats (client i in chat i mod chats). */
  stormClients: number
  stormChats: number
  /** (f): messages per second to the clients' chats, POSTed to node B all along. */
  stormRate: number
  /** (f): node A's drain window (DRAIN_WINDOW_MS): its sockets are closed spread over it. */
  stormDrainMs: number
  /**
   * (f): posting before node A gets SIGTERM (by default a round over every chat, 250 / 20 per s, and a
   * second: every client holds a stream offset before the storm), and after every client is back on B.
   */
  stormWarmupSeconds: number
  stormTailSeconds: number
  /** (g): sockets on one node, one message a second to all of them for `scaleSeconds`. */
  scaleClients: number
  scaleSeconds: number
  /** (g): counting driver processes beside the prober, each with its share of the sockets. */
  scaleDrivers: number
  /** (g): loopback source addresses the sockets are spread over (127.0.0.2 and up). */
  scaleAddresses: number
  /** (h): chat messages ingested one per request, then the same `ingestBatch` per POST /batch. */
  ingestMessages: number
  ingestBatch: number
  /** A drain ends this long after the last delivery if something is still missing. */
  drainIdleMs: number
  /** Wait before reading the RSS of idle connections. */
  idleSettleMs: number
  /**
   * The relay's multi-node cases ((b), and (e) with --mix-nodes 2+) once per mode, in this order, as rows
   * of the same table; the other systems run on one Redis only. Absent: DEFAULT_REDIS_MODES.
   */
  redisModes?: RedisMode[]
  /** Run the driver inside this process (the smoke test in `npm test`), not as child processes. */
  driverInProcess?: boolean
  /** Write a V8 CPU profile of every relay node into this directory (`node --cpu-prof`). */
  profileDir?: string
  /** Build the relay nodes inside this process (the smoke test), not from the compiled server.js. */
  relayInProcess?: boolean
}

export const DEFAULT_OPTIONS: BenchOptions = {
  // (g) holds 50,000 sockets for minutes on a shared machine: only when asked for (`--scenarios g`).
  // (f) takes two to four minutes for its two systems (5,000 sockets connected twice each): only when asked for.
  scenarios: ['a', 'b', 'c', 'd', 'e', 'h'],
  fanoutClients: 1000,
  fanoutMessages: 2000,
  rateClients: 5000,
  rate: 20,
  rateSeconds: 10,
  findRate: true,
  idleClients: 10_000,
  mixChats: 500,
  mixConsoles: 200,
  mixMessages: 4000,
  mixNodes: 1,
  inflight: 8,
  sampleEvery: 20,
  connectConcurrency: 50,
  connectPhases: 10,
  stormClients: 5000,
  stormChats: 250,
  stormRate: 20,
  stormDrainMs: 5000,
  stormWarmupSeconds: 14,
  stormTailSeconds: 5,
  scaleClients: 50_000,
  scaleSeconds: 30,
  scaleDrivers: 4,
  scaleAddresses: 4,
  ingestMessages: 10_000,
  ingestBatch: 100,
  drainIdleMs: 3000,
  idleSettleMs: 3000
}

export interface Scenario {
  name: ScenarioName
  title: string
  nodes: number
  workload: WorkloadSpec
  /** Absent: idle connections, memory only. */
  plan?: PostPlan
  /** (g): memory at half and all the sockets, then the plan; connected by several drivers at once. */
  scale?: { drivers: number, addresses: number }
}

export function systemsFor (name: ScenarioName, options: BenchOptions): SystemName[] {
  if (name === 'h') return DEFAULT_SYSTEMS.h
  if (name === 'f') return (options.systems ?? DEFAULT_SYSTEMS.f).filter((system) => DEFAULT_SYSTEMS.f.includes(system))
  return options.systems ?? DEFAULT_SYSTEMS[name]
}

export function scenario (name: ScenarioName, options: BenchOptions, rate = options.rate): Scenario {
  const burst: PostPlan = { kind: 'burst', inflight: options.inflight }
  const fanout: WorkloadSpec = { kind: 'fanout', clients: options.fanoutClients, messages: options.fanoutMessages }
  switch (name) {
    case 'a':
      return { name, title: `(a) ${options.fanoutClients} clients, ${options.fanoutMessages} messages as fast as possible, 1 node`, nodes: 1, workload: fanout, plan: burst }
    case 'b':
      return { name, title: `(b) ${options.fanoutClients} clients, ${options.fanoutMessages} messages as fast as possible, 2 nodes through one Redis`, nodes: 2, workload: fanout, plan: burst }
    case 'c':
      return {
        name,
        title: `(c) ${options.rateClients} clients, ${rate} messages/s for ${options.rateSeconds} s, 1 node`,
        nodes: 1,
        workload: { kind: 'fanout', clients: options.rateClients, messages: Math.max(1, Math.round(rate * options.rateSeconds)) },
        plan: { kind: 'rate', perSecond: rate }
      }
    case 'd':
      return { name, title: `(d) ${options.idleClients} idle clients, 1 node`, nodes: 1, workload: { kind: 'fanout', clients: options.idleClients, messages: 0 } }
    case 'e':
      return {
        name,
        title: `(e) routing mix: ${options.mixChats} chats × (customer + operator), ${options.mixConsoles} consoles with sources, ` +
          `${options.mixMessages} messages of all four types, ${options.mixNodes} node${options.mixNodes > 1 ? 's through one Redis' : ''}`,
        nodes: options.mixNodes,
        workload: { kind: 'mix', chats: options.mixChats, consoles: options.mixConsoles, messages: options.mixMessages },
        plan: burst
      }
    case 'f':
      // Run by bench/storm.ts, which reads the sizes from the options; the workload here only counts the sockets.
      return {
        name,
        title: `(f) reconnect storm: ${options.stormClients} customer sockets in ${options.stormChats} chats on node A, ${options.stormRate} messages/s ` +
          `to their chats through node B; A drained over ${options.stormDrainMs} ms, every client back on B with its position, 2 nodes through one Redis`,
        nodes: 2,
        workload: { kind: 'fanout', clients: options.stormClients, messages: 0 }
      }
    case 'g':
      // Consoles without sources and a standard message: the relay routes it through one index (every
      // such console) and raw ws through one room ('all'), so both do the same thing: the same bytes to
      // every socket, once a second. Centrifugo's million-connection test held 50,000 sockets per pod.
      return {
        name,
        title: `(g) ${options.scaleClients} clients from ${options.scaleAddresses} loopback addresses, 1 message/s to all for ${options.scaleSeconds} s, 1 node`,
        nodes: 1,
        workload: { kind: 'fanout', clients: options.scaleClients, messages: options.scaleSeconds },
        plan: { kind: 'rate', perSecond: 1 },
        scale: { drivers: options.scaleDrivers, addresses: options.scaleAddresses }
      }
    case 'h':
      // One console receives every message, so events/s is counted at delivery and nothing lost goes unseen.
      return {
        name,
        title: `(h) ingest: ${options.ingestMessages} chat messages one per request vs ${options.ingestBatch} per POST /batch, ` +
          `${options.inflight} requests in flight, 1 console receiving them, 1 node`,
        nodes: 1,
        workload: { kind: 'fanout', clients: 1, messages: options.ingestMessages },
        plan: burst
      }
  }
}

/** The cases of a scenario: (h) runs twice, one message per request and then in batches; the others once. */
export function scenarioCases (plan: Scenario, options: BenchOptions): Scenario[] {
  if (plan.name !== 'h') return [plan]
  return [plan, { ...plan, plan: { kind: 'batch', inflight: options.inflight, size: options.ingestBatch } }]
}

export function clientCount (workload: WorkloadSpec): number {
  return workload.kind === 'fanout' ? workload.clients : workload.chats * 2 + workload.consoles
}
