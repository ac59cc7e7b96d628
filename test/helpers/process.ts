import { spawn, type ChildProcess } from 'node:child_process'
import { access, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Tap } from './relay.js'

export const ROOT = fileURLToPath(new URL('../../', import.meta.url))

/** A port nobody listens on right now (the child binds it a moment later). */
export async function freePort (): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  await new Promise((resolve) => server.close(resolve))
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

/**
 * `npm run build` into a private directory (what `npm start` and the image run, without racing anybody's
 * build into dist/); returns the path of its server.js.
 */
export async function buildServer (t: Tap): Promise<string> {
  const outDir = await mkdtemp(join(tmpdir(), 'relay-drain-'))
  t.teardown(async () => await rm(outDir, { recursive: true, force: true }))
  const tsc = spawn(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', outDir, '--sourceMap', 'false'], {
    cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe']
  })
  let output = ''
  tsc.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  tsc.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const code = await new Promise<number | null>((resolve) => tsc.once('exit', resolve))
  const server = join(outDir, 'server.js')
  // tsc emits despite type errors elsewhere (bench/ being edited, say); `npm run typecheck` judges those.
  if (code !== 0 && !await access(server).then(() => true, () => false)) throw new Error(`build failed (${String(code)}):\n${output}`)
  await writeFile(join(outDir, 'package.json'), JSON.stringify({ type: 'module' }))
  await symlink(join(ROOT, 'node_modules'), join(outDir, 'node_modules'), 'dir')
  return server
}

interface LineWaiter {
  match: (line: string) => boolean
  resolve: (line: string) => void
}

/** `node <build>/server.js` with its stdout read line by line; waits are event-driven with a bound. */
export class RelayProcess {
  readonly lines: string[] = []
  readonly stderr: string[] = []
  readonly exited: Promise<{ code: number | null, signal: NodeJS.Signals | null, at: number }>
  readonly #waiters = new Set<LineWaiter>()
  readonly child: ChildProcess

  constructor (server: string, env: Record<string, string>) {
    this.child = spawn(process.execPath, [server], {
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

  kill (): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL')
  }
}
