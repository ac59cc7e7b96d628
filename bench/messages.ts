import type { WireProtocol } from './ws-client.js'

/** The orchestrator ↔ driver conversation (Node IPC), one request and one answer at a time. */

export type WorkloadSpec =
  | { kind: 'fanout', clients: number, messages: number }
  | { kind: 'mix', chats: number, consoles: number, messages: number }

export type PostPlan =
  | { kind: 'burst', inflight: number }
  | { kind: 'rate', perSecond: number }
  /** As burst, `size` messages per POST /batch (the relay only). */
  | { kind: 'batch', inflight: number, size: number }

export interface DriverInit {
  role: 'prober' | 'counter'
  /** Counters sharing the non-sampling clients: this one owns those whose index mod `count` is `index`. */
  shard?: { index: number, count: number }
  system: WireProtocol
  workload: WorkloadSpec
  /** The ports of the server nodes; client i connects to node i mod nodes, posts go to the first. */
  ports: number[]
  sampleEvery: number
  connectConcurrency: number
  /** Client i connects from address i mod length (127.0.0.x, each with its own ephemeral ports); absent: the default. */
  sourceAddresses?: string[]
  apiToken: string
  jwtSecret: string
}

export type DriverRequest =
  | { op: 'init', init: DriverInit }
  | { op: 'connect', from: number, to: number }
  | { op: 'arm' }
  | { op: 'post', plan: PostPlan }
  | { op: 'drain', idleMs: number, deadlineMs: number }
  | { op: 'exit' }

export interface ConnectAnswer { op: 'connected', clients: number, failed: number, firstError?: string }
export interface PostAnswer { op: 'posted', posted: number, errors: number, firstError?: string, firstPostAt: number, lastPostAt: number }
export interface LatencySummary { count: number, p50: number, p99: number, max: number }

export interface DrainAnswer {
  op: 'drained'
  clients: number
  expected: number
  received: number
  lost: number
  /** Deliveries beyond what a client should get (a routing error). */
  extra: number
  /** Wall-clock ms of the last delivery (NaN if none). */
  lastDeliveryAt: number
  /** POST → receive in ms over the sampling clients (prober only; count 0 on the counter). */
  latency: LatencySummary
  closes: Record<string, number>
  /** This driver process's CPU seconds from arm to drained. */
  cpuSeconds: number
}

export type DriverAnswer =
  | { op: 'ready' }
  | { op: 'inited' }
  | ConnectAnswer
  | { op: 'armed' }
  | PostAnswer
  | DrainAnswer
  | { op: 'error', message: string }

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes. */
export function wallClock (): number {
  return performance.timeOrigin + performance.now()
}
