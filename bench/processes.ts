import { fork, spawn, type ChildProcess } from 'node:child_process'
import { connect, createServer } from 'node:net'
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
  const port = await freePort()
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
    '--daemonize', 'no', '--loglevel', 'warning', '--dir', '/tmp'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout?.on('data', (chunk: Buffer) => { output += chunk.toString() })
  child.stderr?.on('data', (chunk: Buffer) => { output += chunk.toString() })
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
