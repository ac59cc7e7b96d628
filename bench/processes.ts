import { fork, spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { connect, createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { handle, type Driver } from './driver-core.js'
import type { DriverAnswer, DriverRequest } from './messages.js'

/** Child processes of the benchmark: servers, drivers and a private redis-server, each stopped by its pid. */

/** How children run the code: compiled JavaScript, or TypeScript through the loader the caller uses. */
export interface Runtime {
  extension: '.js' | '.ts'
  execArgv: string[]
}

export function currentRuntime (moduleUrl: string): Runtime {
  if (!moduleUrl.endsWith('.ts')) return { extension: '.js', execArgv: [] }
  return { extension: '.ts', execArgv: process.execArgv.filter((flag) => flag.includes('typescript') || flag === '--enable-source-maps') }
}

export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      const port = typeof address === 'object' && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

async function delay (ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms))
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
export async function stop (child: ChildProcess, graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
  await exited
  clearTimeout(timer)
}

export interface ServerProcess {
  /** The process whose CPU and memory are measured. */
  pid: number
  port: number
  /** Last lines of its output, for error messages. */
  output: () => string
  stop: () => Promise<void>
}

/** Starts a Node server script; resolves when GET /ready answers 200, with that answer's body. */
export async function startServer (script: URL, runtime: Runtime, env: Record<string, string>, nodeFlags: string[] = []): Promise<{ server: ServerProcess, ready: string }> {
  const port = await freePort()
  const child = spawn(process.execPath, [...runtime.execArgv, ...nodeFlags, script.pathname], {
    env: { ...process.env, ...env, PORT: String(port) },
    stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  const keep = (chunk: Buffer): void => { output = (output + chunk.toString()).slice(-4000) }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  const server: ServerProcess = { pid: child.pid ?? -1, port, output: () => output, stop: async () => await stop(child) }
  const deadline = Date.now() + 60_000
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${script.pathname} exited with ${child.exitCode}: ${output}`)
    const answer = await fetch(`http://127.0.0.1:${port}/ready`).then(async (response) => response.status === 200 ? await response.text() : undefined, () => undefined)
    if (answer !== undefined) return { server, ready: answer }
    await delay(100)
  }
  await stop(child)
  throw new Error(`${script.pathname} not ready within 60 s: ${output}`)
}

/** The orchestrator's side of a driver: one request at a time. */
export interface DriverLink {
  next: () => Promise<DriverAnswer>
  ask: <Op extends DriverAnswer['op']>(request: DriverRequest, op: Op) => Promise<Extract<DriverAnswer, { op: Op }>>
  close: () => Promise<void>
}

function expect<Op extends DriverAnswer['op']> (request: DriverRequest, answer: DriverAnswer, op: Op): Extract<DriverAnswer, { op: Op }> {
  if (answer.op === 'error') throw new Error(answer.message)
  if (answer.op !== op) throw new Error(`driver answered ${answer.op} to ${request.op}`)
  return answer as Extract<DriverAnswer, { op: Op }>
}

/** A driver in this process (the smoke test: no second TypeScript start-up per case). */
export class InProcessDriver implements DriverLink {
  readonly #state: { driver?: Driver } = {}

  async next (): Promise<DriverAnswer> {
    return { op: 'ready' }
  }

  async ask<Op extends DriverAnswer['op']> (request: DriverRequest, op: Op): Promise<Extract<DriverAnswer, { op: Op }>> {
    return expect(request, await handle(this.#state, request), op)
  }

  async close (): Promise<void> {
    this.#state.driver?.close()
  }
}

/** A driver child and its one-request-at-a-time conversation. */
export class DriverProcess implements DriverLink {
  readonly #child: ChildProcess
  readonly #answers: DriverAnswer[] = []
  #waiting: ((answer: DriverAnswer) => void) | undefined
  #exit: string | undefined

  constructor (script: URL, runtime: Runtime) {
    this.#child = fork(script.pathname, [], { execArgv: runtime.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    this.#child.on('message', (answer: DriverAnswer) => {
      if (this.#waiting === undefined) this.#answers.push(answer)
      else this.#waiting(answer)
    })
    this.#child.once('exit', (code, signal) => {
      this.#exit = `driver exited (${code ?? signal ?? '?'})`
      this.#waiting?.({ op: 'error', message: this.#exit })
    })
  }

  async next (): Promise<DriverAnswer> {
    const queued = this.#answers.shift()
    if (queued !== undefined) return queued
    if (this.#exit !== undefined) return { op: 'error', message: this.#exit }
    return await new Promise((resolve) => {
      this.#waiting = (answer) => {
        this.#waiting = undefined
        resolve(answer)
      }
    })
  }

  /** Sends a request and returns the answer of the expected kind (an `error` answer throws). */
  async ask<Op extends DriverAnswer['op']> (request: DriverRequest, op: Op): Promise<Extract<DriverAnswer, { op: Op }>> {
    this.#child.send(request)
    return expect(request, await this.next(), op)
  }

  async close (): Promise<void> {
    if (this.#exit !== undefined) return
    const exited = new Promise<void>((resolve) => this.#child.once('exit', () => resolve()))
    this.#child.send({ op: 'exit' })
    const timer = setTimeout(() => this.#child.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(timer)
  }
}

export interface RedisProcess {
  child: ChildProcess
  pid: number
  url: string
}

/** A private redis-server on a free port (`--save '' --appendonly no`), never the shared 6379. */
export async function startRedis (): Promise<RedisProcess> {
  return await launchRedis(await freePort(), [])
}

/** redis-server on `port` with `extra` arguments; resolves once it answers PING. */
async function launchRedis (port: number, extra: string[], dir = '/tmp'): Promise<RedisProcess> {
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--daemonize', 'no', '--loglevel', 'warning', '--dir', dir, ...extra], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  // Kept short and read for the process's whole life, so a full pipe never blocks it.
  child.stdout?.on('data', (chunk: Buffer) => { output = (output + chunk.toString()).slice(-4000) })
  child.stderr?.on('data', (chunk: Buffer) => { output = (output + chunk.toString()).slice(-4000) })
  const spawned = await new Promise<boolean>((resolve) => {
    child.once('spawn', () => resolve(true))
    child.once('error', () => resolve(false))
  })
  if (!spawned) throw new Error('redis-server not found: install Redis for the 2-node scenario')
  const deadline = Date.now() + 10_000
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`redis-server exited: ${output}`)
    if (await answersPing(port)) return { child, pid: child.pid ?? -1, url: `redis://127.0.0.1:${port}` }
    await delay(50)
  }
  await stop(child)
  throw new Error(`redis-server did not start: ${output}`)
}

/** True once the port answers PING with PONG. */
async function answersPing (port: number): Promise<boolean> {
  return await new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1', () => socket.write('PING\r\n'))
    socket.setTimeout(1000, () => { socket.destroy(); resolve(false) })
    socket.once('error', () => resolve(false))
    socket.once('data', (chunk: Buffer) => {
      resolve(chunk.toString().startsWith('+PONG'))
      socket.destroy()
    })
  })
}

export interface RedisClusterProcesses {
  /** All six redis-servers, masters and replicas; teardown stops each by its pid. */
  nodes: RedisProcess[]
  /** The masters as created, `host:port,host:port,host:port` (REDIS_CLUSTER_NODES). */
  mastersEnv: string
  masters: Array<{ host: string, port: number }>
  /** The nodes that started as replicas (the bench fails nothing over, so they stay replicas). */
  replicas: RedisProcess[]
  stop: () => Promise<void>
}

/**
 * A private Redis Cluster: 3 masters with one replica each (`redis-cli --cluster create
 * --cluster-replicas 1`), every node `--save '' --appendonly no` on free loopback ports with its cluster
 * bus port given explicitly (the default, port + 10000, is past 65535 for most ephemeral ports), its
 * nodes.conf in a temporary directory. Resolves once every node says cluster_state:ok, agrees on who
 * serves the 16,384 slots, and every replica's link is up. `stop` SIGTERMs each node by pid.
 */
export async function startRedisCluster (timeoutMs = 30_000): Promise<RedisClusterProcesses> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-redis-cluster-'))
  const nodes: RedisProcess[] = []
  const stopAll = async (): Promise<void> => {
    await Promise.all(nodes.map(async (node) => await stop(node.child)))
    await rm(dir, { recursive: true, force: true })
  }
  try {
    for (let n = 0; n < 6; n++) nodes.push(await launchClusterNode(dir))
    const addresses = nodes.map((node) => node.url.replace('redis://', ''))
    await createCluster(addresses, timeoutMs)
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const state = await clusterState(nodes)
      if (typeof state !== 'string') {
        const masters = nodes.filter((node) => !state.replicas.includes(node)).map((node) => ({ host: '127.0.0.1', port: Number(new URL(node.url).port) }))
        return { nodes, masters, replicas: state.replicas, mastersEnv: masters.map(({ host, port }) => `${host}:${port}`).join(','), stop: stopAll }
      }
      if (Date.now() > deadline) throw new Error(`the Redis Cluster did not settle within ${timeoutMs} ms: ${state}`)
      await delay(100)
    }
  } catch (error) {
    await stopAll()
    throw error
  }
}

/** One cluster-enabled node on fresh ports; once more on fresh ones if somebody took a port first. */
async function launchClusterNode (dir: string): Promise<RedisProcess> {
  const attempt = async (): Promise<RedisProcess> => {
    const [port, busPort] = [await freePort(), await freePort()]
    return await launchRedis(port, ['--cluster-enabled', 'yes', '--cluster-config-file', join(dir, `nodes-${port}.conf`),
      '--cluster-port', String(busPort), '--cluster-node-timeout', '5000',
      // The 7.0 default waits 5 s for more replicas before a diskless full sync.
      '--repl-diskless-sync-delay', '0'], dir)
  }
  return await attempt().catch(async () => await attempt())
}

async function createCluster (addresses: string[], ms: number): Promise<void> {
  const child = spawn('redis-cli', ['--cluster', 'create', ...addresses, '--cluster-replicas', '1', '--cluster-yes'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout?.on('data', (chunk: Buffer) => { output = (output + chunk.toString()).slice(-4000) })
  child.stderr?.on('data', (chunk: Buffer) => { output = (output + chunk.toString()).slice(-4000) })
  const timer = setTimeout(() => child.kill('SIGKILL'), ms)
  const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => {
    child.once('error', () => resolve([null, 'redis-cli not found']))
    child.once('exit', (...exit) => resolve(exit))
  })
  clearTimeout(timer)
  if (code !== 0) throw new Error(`redis-cli --cluster create failed (${code ?? signal ?? '?'}): ${output}`)
}

/**
 * The replicas once every node says cluster_state:ok, every node sees the same 3 masters serving the
 * slots and 3 replicas, and each replica (by its own INFO) has its link up; else why not.
 */
async function clusterState (nodes: RedisProcess[]): Promise<{ replicas: RedisProcess[] } | string> {
  try {
    const views = await Promise.all(nodes.map(async (node) => await adminCall(node, async (client) => {
      const state = /^cluster_state:(\w+)/m.exec(await client.call('CLUSTER', 'INFO') as string)?.[1]
      const lines = parseClusterNodes(await client.call('CLUSTER', 'NODES') as string)
      const replication = await client.info('replication')
      return { node, state, lines, role: /^role:(\w+)/m.exec(replication)?.[1], link: /^master_link_status:(\w+)/m.exec(replication)?.[1] }
    })))
    const notOk = views.find((view) => view.state !== 'ok')
    if (notOk !== undefined) return `${notOk.node.url} cluster_state:${notOk.state ?? '?'}`
    const layouts = views.map((view) => view.lines.filter((line) => line.flags.includes('master') && line.slots.length > 0)
      .map((line) => `${line.port}:${line.slots.join(' ')}`).sort().join('|'))
    if (new Set(layouts).size !== 1) return `the nodes disagree on the slot owners: ${layouts.join(' / ')}`
    const partial = views.find((view) => view.lines.filter((line) => line.flags.includes('master') && line.slots.length > 0).length !== 3 ||
      view.lines.filter((line) => line.flags.includes('slave')).length !== 3)
    if (partial !== undefined) return `${partial.node.url} does not see 3 masters with slots and 3 replicas yet`
    const replicas = views.filter((view) => view.role === 'slave')
    if (replicas.length !== 3 || replicas.some((view) => view.link !== 'up')) return `${replicas.filter((view) => view.link === 'up').length} of 3 replicas linked`
    return { replicas: replicas.map((view) => view.node) }
  } catch (error) {
    return (error as Error).message
  }
}

/** `<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot>...` */
function parseClusterNodes (text: string): Array<{ host: string, port: number, flags: string[], slots: string[] }> {
  return text.split('\n').filter((line) => line.trim() !== '').map((line) => {
    const [, endpoint = '', flags = '', , , , , , ...slots] = line.trim().split(' ')
    const hostPort = endpoint.split('@')[0] ?? ''
    const colon = hostPort.lastIndexOf(':')
    return { host: hostPort.slice(0, colon), port: Number(hostPort.slice(colon + 1)), flags: flags.split(','), slots: slots.filter((slot) => !slot.startsWith('[')) }
  })
}

/** One short-lived admin connection that never retries: a node that does not answer fails the call. */
async function adminCall<T> (node: RedisProcess, use: (client: Redis) => Promise<T>): Promise<T> {
  const client = new Redis(node.url, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 2000, commandTimeout: 2000 })
  client.on('error', () => {})
  try {
    await client.connect()
    return await use(client)
  } finally {
    client.disconnect()
  }
}
