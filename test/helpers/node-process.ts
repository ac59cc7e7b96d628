import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import type { Tap } from './relay.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const SOURCES = ['app.ts', 'server.ts', 'src', 'plugins', 'routes']

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
 * The relay's server as JavaScript in a private temporary directory, so a test can run the real server
 * as a child process without racing anybody's `npm run build` into dist/. Each file is transpiled on its
 * own (types are `npm run typecheck`'s business), which takes milliseconds where a full tsc build takes
 * seconds.
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
