import type { BusState } from '../../src/stores/bus.js'
import { buildRelay, freePort, RelayProcess } from './process.js'
import { startRedis, type PrivateRedis } from './redis.js'
import { API_TOKEN, JWT_SECRET, startRelay, type Relay, type Tap } from './relay.js'

/** Short intervals so faults resolve within a test; the defaults are in src/config.ts. */
export const FAST_REDIS_ENV = {
  REDIS_RETRY_MAX_MS: '100',
  PRESENCE_HEARTBEAT_MS: '200',
  PRESENCE_TTL_MS: '1000',
  PUBLISH_TIMEOUT_MS: '1000'
}

/** Resolves when the relay's bus reaches `state` (at once if it is there); fails after `ms`. */
export async function waitForBus (relay: Relay, state: BusState, ms = 5000): Promise<void> {
  const { bus } = relay.app.stores
  if (bus.isReady() === (state === 'ready')) return
  await new Promise<void>((resolve, reject) => {
    let done = false
    const timer = setTimeout(() => {
      done = true
      reject(new Error(`bus not ${state} within ${ms} ms`))
    }, ms)
    bus.onStateChange((reached) => {
      if (done || reached !== state) return
      done = true
      clearTimeout(timer)
      resolve()
    })
  })
}

/** Relay nodes on one private Redis under one fresh prefix, each with its bus ready. */
export async function startCluster (t: Tap, redis: PrivateRedis, nodes: number, env: Record<string, string> = {}): Promise<Relay[]> {
  const shared = { REDIS_URL: redis.url, REDIS_PREFIX: redis.prefix(), ...FAST_REDIS_ENV, ...env }
  const relays: Relay[] = []
  for (let index = 0; index < nodes; index++) relays.push(await startRelay(t, shared))
  await Promise.all(relays.map(async (relay) => await waitForBus(relay, 'ready')))
  return relays
}

/** Polls `check` every `everyMs` until it returns true; fails after `ms` (for expiries, not for frames). */
export async function eventually (check: () => Promise<boolean>, ms: number, what: string, everyMs = 50): Promise<number> {
  const started = Date.now()
  for (;;) {
    if (await check()) return Date.now() - started
    if (Date.now() - started > ms) throw new Error(`${what}: not within ${ms} ms`)
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
}

export interface SurvivorAndChild {
  redis: PrivateRedis
  /** An in-process node, ready. */
  survivor: Relay
  /** A node as a real child process (to SIGKILL or SIGSTOP), ready. */
  child: RelayProcess
  port: number
  wsUrl: string
  httpUrl: string
}

/** A private Redis with two nodes on it: one in this process, one a child process to kill or stall. */
export async function startSurvivorAndChild (t: Tap): Promise<SurvivorAndChild> {
  const [redis, server] = await Promise.all([startRedis(t), buildRelay(t)])
  const env = { REDIS_URL: redis.url, REDIS_PREFIX: redis.prefix(), ...FAST_REDIS_ENV }
  const survivor = await startRelay(t, env)
  await waitForBus(survivor, 'ready')
  const port = await freePort()
  const child = new RelayProcess(t, server, {
    ...env, NODE_ENV: 'production', PORT: String(port), HOST: '127.0.0.1', API_TOKEN, JWT_SECRET, LOG_LEVEL: 'warn'
  })
  const httpUrl = `http://127.0.0.1:${port}`
  await eventually(async () => (await fetch(`${httpUrl}/ready`).catch(() => undefined))?.status === 200,
    15_000, `the child node ready; output: ${child.output}`)
  return { redis, survivor, child, port, wsUrl: `ws://127.0.0.1:${port}`, httpUrl }
}
