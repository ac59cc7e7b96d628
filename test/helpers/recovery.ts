import type { Frame, TestClient } from './client.js'
import { messageOf } from './routing-suite.js'
import type { Test } from 'tap'
import { startCluster } from './cluster.js'
import { parsePrometheus, valueOf } from './prometheus.js'
import { startRedis } from './redis.js'
import { startRelay, type Relay } from './relay.js'

/** Message types of a burst, in turn: what each reaches (SPEC Routing). */
export const BURST_KINDS = [
  { type: 'standard', type_role: 'operator' },
  { type: 'bot', type_role: 'bot' },
  { type: 'system', type_role: 'user' },
  { type: 'system', type_role: 'operator' },
  { type: 'note', type_role: 'operator' }
] as const

export interface Burst {
  /** Ids acknowledged (200), in posting order. */
  acked: number[]
  /** Message by id, as posted. */
  posted: Map<number, Record<string, unknown>>
  done: Promise<void>
}

/**
 * Posts `count` messages to `relay`, one after another, cycling through the burst kinds; `onAck(n)` runs
 * after the n-th acknowledgement (so a test can cut a socket at a chosen point).
 */
export function postBurst (relay: Relay, chat: Record<string, unknown>, count: number, onAck: (acked: number) => void = () => {}, fields: Record<string, unknown> = {}): Burst {
  const burst: Burst = { acked: [], posted: new Map(), done: Promise.resolve() }
  burst.done = (async () => {
    for (let index = 0; index < count; index++) {
      const kind = BURST_KINDS[index % BURST_KINDS.length] as (typeof BURST_KINDS)[number]
      const message = messageOf(chat, { type: kind.type, type_role: kind.type_role, ...fields })
      const answer = await relay.post('/message', { message })
      if (answer.statusCode !== 200) continue
      burst.acked.push(message.id as number)
      burst.posted.set(message.id as number, message)
      onAck(burst.acked.length)
    }
  })()
  return burst
}

/** Whether a customer (`user`) or an operator console reads a message of the burst. */
export function owedTo (who: 'customer' | 'console', message: Record<string, unknown>): boolean {
  if (who === 'console') return message.type === 'standard' || message.type === 'bot'
  return message.type !== 'note' && (message.type !== 'system' || message.type_role === 'user')
}

export function durableFrames (...clients: TestClient[]): Frame[] {
  return clients.flatMap((client) => client.frames.filter((frame) => frame.offset !== undefined))
}

/** Problems with the offsets of frames in arrival order: a repeat or a step back within a stream. */
export function offsetProblems (frames: Frame[]): string[] {
  const last = new Map<string, number>()
  const problems: string[] = []
  for (const frame of frames) {
    const stream = frame.stream as string
    const offset = frame.offset as number
    const before = last.get(stream)
    if (before !== undefined && offset <= before) problems.push(`${stream}: ${offset} after ${before}`)
    last.set(stream, offset)
  }
  return problems
}

export function messageIds (frames: Frame[]): number[] {
  return frames.filter((frame) => frame.type === 'message_added').map((frame) => frame.data.message.id as number)
}

export type Nodes = [ingest: Relay, first: Relay, second: Relay]

/** Three nodes on a private Redis. */
export async function redisNodes (t: Test, env: Record<string, string> = {}): Promise<Nodes> {
  const redis = await startRedis(t)
  const nodes = await startCluster(t, redis, 3, env)
  return nodes as Nodes
}

/** One relay on the embedded bus, standing in for all three. */
export async function memoryNodes (t: Test, env: Record<string, string> = {}): Promise<Nodes> {
  const relay = await startRelay(t, env)
  return [relay, relay, relay]
}

export async function metric (relay: Relay, name: string, labels: Record<string, string> = {}): Promise<number> {
  const response = await relay.app.inject({ method: 'GET', url: '/metrics' })
  return valueOf(parsePrometheus(response.body), name, labels)
}
