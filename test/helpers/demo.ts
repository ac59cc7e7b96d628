import { existsSync } from 'node:fs'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Browser } from 'playwright-core'
import { chromium } from 'playwright-core'
import ts from 'typescript'
import type { DemoOptions } from '../../plugins/demo.js'
import { listenRelay, testConfig, type Relay, type Tap } from './relay.js'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))
/** Debian's chromium (`.ci/run` installs it with apt); CHROMIUM_PATH overrides. */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'

/**
 * The SDK as browser ESM in a private directory, from client/src as it is now (not whatever dist/ holds):
 * each file transpiled on its own, as the relay's test build does. Its type imports vanish
 * (verbatimModuleSyntax), so the files import only each other.
 */
export async function buildSdk (t: Tap): Promise<string> {
  const outDir = await mkdtemp(join(tmpdir(), 'relay-sdk-'))
  t.teardown(async () => await rm(outDir, { recursive: true, force: true }))
  const sources = join(ROOT, 'client', 'src')
  const compilerOptions = { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: true }
  for (const name of await readdir(sources)) {
    if (!name.endsWith('.ts') || name.endsWith('.d.ts')) continue
    const output = ts.transpileModule(await readFile(join(sources, name), 'utf8'), { compilerOptions, fileName: name })
    await writeFile(join(outDir, name.replace(/\.ts$/, '.js')), output.outputText)
  }
  return outDir
}

/** Chromium, headless, closed when the test ends. */
export async function launchChromium (t: Tap): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`no chromium at ${CHROMIUM}: apt-get install -y chromium (.ci/run does), or set CHROMIUM_PATH`)
  // --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start.
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox'] })
  t.teardown(async () => await browser.close())
  return browser
}

/** A relay with DEMO=true on an ephemeral port (as startRelay), its SDK served from `demo.sdkDir`. */
export async function startDemoRelay (t: Tap, demo: DemoOptions = {}, env: Record<string, string> = {}): Promise<Relay> {
  return await listenRelay(t, { config: testConfig({ DEMO: 'true', ...env }), demo })
}
