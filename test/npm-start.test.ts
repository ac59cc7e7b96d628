import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { readdir, stat } from 'node:fs/promises'
import { delimiter, dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import { freePort } from './helpers/process.js'
import type { Tap } from './helpers/relay.js'

/**
 * Issue 9: two `npm start` at once from one checkout (two nodes under one process manager) raced on
 * dist/, because `npm start` rebuilt every time (prestart): one node crashed on a half-written file
 * (`SyntaxError: … does not provide an export named 'default'`), and no node answered before the 12–30 s
 * build. Now `npm ci` builds (prepare) and `npm start` is `node dist/server.js`: this starts two the way
 * an operator does, from the checkout with no configuration, and checks that neither compiles.
 */
const ROOT = fileURLToPath(new URL('../', import.meta.url))
const DIST = join(ROOT, 'dist')
const UP_WITHIN_MS = 30_000
const GONE_WITHIN_MS = 10_000

/** Every file under dist/ with its modification time: a build rewrites every one of them. */
async function snapshot (directory: string, files = new Map<string, number>(), root = directory): Promise<Map<string, number>> {
  for (const entry of await readdir(directory, { withFileTypes: true })) {
    const path = join(directory, entry.name)
    if (entry.isDirectory()) await snapshot(path, files, root)
    else files.set(relative(root, path), (await stat(path)).mtimeMs)
  }
  return files
}

/** The process groups still to kill: teardown kills each, and an exit of this test process any left. */
const groups = new Set<number>()
function killGroup (group: number): void {
  groups.delete(group)
  try {
    process.kill(-group, 'SIGKILL')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error
  }
}
process.once('exit', () => { for (const group of groups) killGroup(group) })

interface Started { listening: true, at: number }
interface Exited { listening: false, code: number | null, signal: NodeJS.Signals | null }

/** `npm start` in a process group of its own (npm, its shell, node), killed as a whole in teardown. */
class NpmStart {
  readonly child: ChildProcess
  readonly port: number
  readonly startedAt = Date.now()
  readonly up: Promise<Started | Exited>
  #stdout = ''
  #stderr = ''

  constructor (t: Tap, port: number) {
    this.port = port
    this.child = spawn('npm', ['start'], {
      cwd: ROOT,
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        // The npm next to this node; the relay gets nothing but its port and log level.
        PATH: [dirname(process.execPath), process.env.PATH ?? ''].join(delimiter),
        ...(process.env.HOME === undefined ? {} : { HOME: process.env.HOME }),
        npm_config_update_notifier: 'false',
        PORT: String(port),
        LOG_LEVEL: 'info'
      }
    })
    // Every process holding the output pipes is gone once they close: that is what teardown waits for.
    const closed = new Promise<void>((resolve) => this.child.once('close', () => resolve()))
    const group = this.child.pid
    if (group !== undefined) groups.add(group)
    t.teardown(async () => {
      if (group !== undefined) killGroup(group)
      let timer: NodeJS.Timeout | undefined
      await Promise.race([closed, new Promise((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`npm start on port ${port} still running ${GONE_WITHIN_MS} ms after SIGKILL`)), GONE_WITHIN_MS)
      })]).finally(() => clearTimeout(timer))
    })
    this.up = new Promise((resolve) => {
      this.child.stdout?.on('data', (chunk: Buffer) => {
        this.#stdout += chunk.toString()
        if (this.#stdout.includes('"msg":"Server listening at')) resolve({ listening: true, at: Date.now() })
      })
      this.child.stderr?.on('data', (chunk: Buffer) => { this.#stderr += chunk.toString() })
      this.child.once('exit', (code, signal) => resolve({ listening: false, code, signal }))
    })
  }

  /** stdout, then stderr, of npm, its shell and the relay. */
  get output (): string {
    return `${this.#stdout}\n${this.#stderr}`
  }

  /** The lifecycle scripts npm ran: its banner is `> name@version script` then `> command`. */
  get banner (): { scripts: string[], commands: string[] } {
    const lines = this.output.split('\n').filter((line) => line.startsWith('> '))
    const scripts = lines.flatMap((line) => /^> \S+@\S+ (\S+)$/.exec(line)?.[1] ?? [])
    return { scripts, commands: lines.filter((line) => !/^> \S+@\S+ \S+$/.test(line)).map((line) => line.slice(2)) }
  }

  async waitUp (): Promise<Started | Exited | undefined> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<undefined>((resolve) => { timer = setTimeout(() => resolve(undefined), UP_WITHIN_MS) })
    return await Promise.race([this.up, timeout]).finally(() => clearTimeout(timer))
  }
}

t.before(() => {
  // `npm ci` builds dist/ (prepare); a working tree that never ran it is built once here, before anything
  // is measured.
  if (existsSync(join(DIST, 'server.js'))) return
  t.comment('dist/server.js missing: npm run build')
  const build = spawnSync('npm', ['run', 'build'], { cwd: ROOT, encoding: 'utf8' })
  if (build.status !== 0) throw new Error(`npm run build failed:\n${build.stdout}\n${build.stderr}`)
})

t.test('two `npm start` at once from one checkout: both answer /health, neither compiles nor crashes', async (t) => {
  const before = await snapshot(DIST)
  t.ok(before.has('server.js'), 'dist/server.js is there before the starts')
  const ports = [await freePort(), await freePort()]
  // Launched in the same tick, as a process manager starts two nodes.
  const nodes = ports.map((port) => new NpmStart(t, port))

  const results = await Promise.all(nodes.map(async (node) => await node.waitUp()))
  for (const [index, node] of nodes.entries()) {
    const result = results[index]
    const name = `npm start on port ${node.port}`
    if (result?.listening === true) {
      t.pass(`${name} is listening (${result.at - node.startedAt} ms after launch)`)
    } else {
      t.fail(result === undefined
        ? `${name} not listening within ${UP_WITHIN_MS} ms`
        : `${name} exited before listening (code ${String(result.code)}, signal ${String(result.signal)})`,
      { output: node.output })
      continue
    }
    const health = await fetch(`http://127.0.0.1:${node.port}/health`)
    t.equal(health.status, 200, `${name}: GET /health 200`)
    t.same(await health.json(), { status: 'ok' }, `${name}: /health body`)
  }

  for (const node of nodes) {
    const name = `npm start on port ${node.port}`
    t.equal(node.child.exitCode, null, `${name} is still running`)
    t.equal(node.child.signalCode, null, `${name} was not killed`)
    t.notMatch(node.output, /SyntaxError/, `${name} printed no SyntaxError`)
    const { scripts, commands } = node.banner
    t.same(scripts, ['start'], `${name} ran the start script and no other (no prestart, no build)`, { output: node.output })
    t.same(commands, ['node dist/server.js'], `${name} ran node dist/server.js`, { output: node.output })
    t.notOk(commands.some((command) => /\btsc\b/.test(command)), `${name} ran no tsc`)
  }

  const after = await snapshot(DIST)
  const changed = [...new Set([...before.keys(), ...after.keys()])].filter((file) => before.get(file) !== after.get(file))
  t.same(changed, [], 'no file of dist/ was written, added or removed by the starts')
})
