import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, rm, symlink, writeFile, access } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Tap } from './relay.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

/**
 * Compiles the relay (tsconfig.build.json) into a private temporary directory, so a test can run the
 * real server as a child process without racing anybody's `npm run build` into dist/.
 */
export async function buildRelay (t: Tap): Promise<string> {
  const outDir = await mkdtemp(join(tmpdir(), 'relay-build-'))
  t.teardown(async () => await rm(outDir, { recursive: true, force: true }))
  const tsc = spawn(process.execPath, [
    join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.build.json'), '--outDir', outDir, '--sourceMap', 'false'
  ], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  tsc.stdout.on('data', (chunk: Buffer) => { output += chunk.toString() })
  tsc.stderr.on('data', (chunk: Buffer) => { output += chunk.toString() })
  const code = await new Promise<number | null>((resolve) => tsc.once('exit', resolve))
  const server = join(outDir, 'server.js')
  // tsc emits despite type errors elsewhere (say, in bench/ while someone edits it); `npm run typecheck` judges those.
  if (code !== 0 && !await access(server).then(() => true, () => false)) throw new Error(`build failed (${String(code)}):\n${output}`)
  await writeFile(join(outDir, 'package.json'), JSON.stringify({ type: 'module' }))
  await symlink(join(ROOT, 'node_modules'), join(outDir, 'node_modules'), 'dir')
  return server
}

/** `node <build>/server.js` with the given environment; SIGKILLed in teardown if still running. */
export class NodeProcess {
  readonly child: ChildProcess
  readonly exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
  output = ''

  constructor (t: Tap, server: string, env: Record<string, string>) {
    this.child = spawn(process.execPath, [server], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe']
    })
    this.child.stdout?.on('data', (chunk: Buffer) => { this.output += chunk.toString() })
    this.child.stderr?.on('data', (chunk: Buffer) => { this.output += chunk.toString() })
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })))
    t.teardown(async () => await this.kill())
  }

  /** SIGKILL: no drain, no goodbye to Redis. Resolves once the process is gone. */
  async kill (): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL')
    await this.exited
  }
}
