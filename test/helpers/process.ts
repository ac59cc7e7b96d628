import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import type { Tap } from './relay.js'

/** The relay run as a real child process (drain, node failure): built into a private directory. */
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const SOURCES = ['app.ts', 'server.ts', 'src', 'plugins', 'routes']

/** A port nobody listens on right now (the child binds it a moment later). */
export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  await new Promise((resolve) => server.close(resolve))
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

async function typescriptFiles (path: string): Promise<string[]> {
  if (path.endsWith('.ts')) return path.endsWith('.d.ts') ? [] : [path]
  const entries = await readdir(path, { withFileTypes: true })
  const nested = await Promise.all(entries.map(async (entry) => {
    const child = join(path, entry.name)
    return entry.isDirectory() || entry.name.endsWith('.ts') ? await typescriptFiles(child) : []
  }))
  return nested.flat()
}

/**
 * The relay's server as JavaScript in a private temporary directory, so a test runs the real server
 * without racing anybody's `npm run build` into dist/. Each file is transpiled on its own (types are
 * `npm run typecheck`'s business): milliseconds, where a full tsc build takes seconds.
 */
export async function buildRelay (t: Tap): Promise<string> {
  const outDir = await mkdtemp(join(tmpdir(), 'relay-build-'))
  t.teardown(async () => await rm(outDir, { recursive: true, force: true }))
  const files = (await Promise.all(SOURCES.map(async (source) => await typescriptFiles(join(ROOT, source))))).flat()
  const compilerOptions = { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, esModuleInterop: true }
  await Promise.all(files.map(async (file) => {
    const output = ts.transpileModule(await readFile(file, 'utf8'), { compilerOptions, fileName: file })
    const target = join(outDir, relative(ROOT, file)).replace(/\.ts$/, '.js')
    await mkdir(dirname(target), { recursive: true })
    await writeFile(target, output.outputText)
  }))
  await writeFile(join(outDir, 'package.json'), JSON.stringify({ type: 'module' }))
  await symlink(join(ROOT, 'node_modules'), join(outDir, 'node_modules'), 'dir')
  return join(outDir, 'server.js')
}

interface LineWaiter {
  match: (line: string) => boolean
  resolve: (line: string) => void
}

/**
 * `node <build>/server.js` with its stdout read line by line (waits are event-driven with a bound);
 * SIGKILLed in teardown if still running.
 */
export class RelayProcess {
  readonly lines: string[] = []
  readonly stderr: string[] = []
  readonly exited: Promise<{ code: number | null, signal: NodeJS.Signals | null, at: number }>
  readonly #waiters = new Set<LineWaiter>()
  readonly child: ChildProcess

  /** `openFiles`: the child's `ulimit -n` (file descriptors), to attack it at a low limit. */
  constructor (t: Tap, server: string, env: Record<string, string>, options: { openFiles?: number } = {}) {
    const [command, args] = options.openFiles === undefined
      ? [process.execPath, [server]]
      : ['bash', ['-c', `ulimit -n ${options.openFiles} && exec "$0" "$1"`, process.execPath, server]]
    this.child = spawn(command, args, {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let pending = ''
    this.child.stdout?.on('data', (chunk: Buffer) => {
      pending += chunk.toString()
      const complete = pending.split('\n')
      pending = complete.pop() ?? ''
      for (const line of complete.filter((entry) => entry !== '')) {
        this.lines.push(line)
        for (const waiter of this.#waiters) {
          if (!waiter.match(line)) continue
          this.#waiters.delete(waiter)
          waiter.resolve(line)
        }
      }
    })
    this.child.stderr?.on('data', (chunk: Buffer) => { this.stderr.push(chunk.toString()) })
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() }))
    })
    t.teardown(async () => await this.kill())
  }

  /** Everything it printed, for failure messages. */
  get output (): string {
    return `${this.lines.join('\n')}\n${this.stderr.join('')}`
  }

  async waitForLine (match: (line: string) => boolean, ms: number, what: string): Promise<string> {
    const seen = this.lines.find(match)
    if (seen !== undefined) return seen
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters.delete(waiter)
        reject(new Error(`relay process: no ${what} within ${ms} ms; stdout:\n${this.lines.join('\n')}\nstderr:\n${this.stderr.join('')}`))
      }, ms)
      const waiter: LineWaiter = { match, resolve: (line) => { clearTimeout(timer); resolve(line) } }
      this.#waiters.add(waiter)
    })
  }

  /** Resolves with the first pino line whose `msg` equals `message`. */
  async waitForLog (message: string, ms = 30_000): Promise<string> {
    return await this.waitForLine((line) => line.includes(`"msg":${JSON.stringify(message)}`), ms, `log "${message}"`)
  }

  /** SIGKILL: no drain, no goodbye to Redis. Resolves once the process is gone. */
  async kill (): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL')
    await this.exited
  }
}
