import { execFile } from 'node:child_process'
import { generateKeyPairSync, randomUUID } from 'node:crypto'
import { existsSync, statSync } from 'node:fs'
import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { delimiter, dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import t from 'tap'
import ts from 'typescript'
import { main } from '../scripts/token-command.js'
import { closeAll, connect, join as joinSocket } from './helpers/client.js'
import { JWT_SECRET, startRelay, type Tap } from './helpers/relay.js'

const ROOT = fileURLToPath(new URL('../', import.meta.url))

/** scripts/ and src/ as JavaScript in a private directory (as helpers/process.ts builds the relay): no race on dist/. */
async function buildCli (t: Tap): Promise<string> {
  const outDir = await mkdtemp(join(tmpdir(), 'token-cli-'))
  t.teardown(async () => await rm(outDir, { recursive: true, force: true }))
  const files = async (directory: string): Promise<string[]> => (await Promise.all((await readdir(directory, { withFileTypes: true }))
    .map(async (entry) => entry.isDirectory() ? await files(join(directory, entry.name)) : entry.name.endsWith('.ts') ? [join(directory, entry.name)] : []))).flat()
  const sources = [...await files(join(ROOT, 'scripts')), ...await files(join(ROOT, 'src'))]
  await Promise.all(sources.map(async (file) => {
    const output = ts.transpileModule(await readFile(file, 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, esModuleInterop: true }, fileName: file
    })
    const target = join(outDir, relative(ROOT, file)).replace(/\.ts$/, '.js')
    await mkdir(dirname(target), { recursive: true })
    await writeFile(target, output.outputText)
  }))
  await writeFile(join(outDir, 'package.json'), JSON.stringify({ type: 'module' }))
  await symlink(join(ROOT, 'node_modules'), join(outDir, 'node_modules'), 'dir')
  return join(outDir, 'scripts', 'token.js')
}

interface Run { code: number | null, stdout: string, stderr: string }

async function run (command: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  return await new Promise((resolve) => {
    // Only PATH and what the test gives: no JWT_SECRET leaks in from the shell that runs the suite.
    const childEnv = { PATH: [dirname(process.execPath), process.env.PATH ?? ''].join(delimiter), ...env }
    execFile(command, args, { cwd: ROOT, env: childEnv, timeout: 20_000 }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : null, stdout, stderr })
    })
  })
}

function claimsOf (token: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString()) as Record<string, unknown>
}

let cli: string
t.before(async () => { cli = await buildCli(t) })
/** The real command in a process of its own (exit code, stdout, stderr); slow under tap (its hooks load in every child). */
const command = async (args: string[], env: Record<string, string> = { JWT_SECRET }): Promise<Run> => await run(process.execPath, [cli, ...args], env)
/** The same command in this process, for the many cases. */
async function token (args: string[], env: Record<string, string> = { JWT_SECRET }): Promise<Run> {
  const result = { code: null as number | null, stdout: '', stderr: '' }
  result.code = await main(args, env, { stdout: (text) => { result.stdout += text }, stderr: (text) => { result.stderr += text } })
  return result
}

t.test('a customer token for the chat given: the relay admits it to that chat, and only there', async (t) => {
  const relay = await startRelay(t)
  const chat = randomUUID()
  const printed = await command(['--role', 'user', '--chat', chat, '--sub', '7', '--ttl', '1h'])
  t.equal(printed.code, 0, 'exit 0')
  t.equal(printed.stderr, '')
  t.match(printed.stdout, /^[\w-]+\.[\w-]+\.[\w-]+\n$/, 'the token and a newline, nothing else')
  const jwt = printed.stdout.trim()
  const claims = claimsOf(jwt)
  t.match(claims, { sub: '7', role: 'user', chat })
  t.equal(Number(claims.exp) - Number(claims.iat), 3600, '--ttl 1h')
  const customer = await joinSocket(relay.wsUrl, '/chat', { token: jwt, name: 'customer' })
  t.teardown(() => closeAll(customer))
  const connected = await customer.next('connected')
  t.match(connected.data, { user: { id: 7, role: 'user' }, chat: { uuid: chat } }, 'connected in the chat as user 7')

  const elsewhere = connect(relay.wsUrl, '/chat', { token: jwt, query: { chat: randomUUID() } })
  t.equal((await elsewhere.closed).code, 4403, 'negative twin: another chat is refused')
  const console = connect(relay.wsUrl, '/broadcast', { token: jwt })
  t.equal((await console.closed).code, 4403, 'and a customer gets no console')
})

t.test('an operator console token with --sources-widgets sees those widgets and no other', async (t) => {
  const relay = await startRelay(t)
  const printed = await token(['--role', 'operator', '--sub', '12', '--sources-widgets', 'shop, lk', '--ttl', '90s'])
  t.equal(printed.code, 0)
  const claims = claimsOf(printed.stdout.trim())
  t.match(claims, { sub: '12', role: 'operator', sources: { widgets: ['shop', 'lk'] } })
  t.notOk('chat' in claims, 'no chat claim')
  t.equal(Number(claims.exp) - Number(claims.iat), 90)
  const console = await joinSocket(relay.wsUrl, '/broadcast', { token: printed.stdout.trim(), name: 'console' })
  t.teardown(() => closeAll(console))
  const [hidden, shown] = [randomUUID(), randomUUID()]
  t.equal((await relay.post('/update/chat', { uuid: hidden, widget: { source: 'other' } })).statusCode, 200)
  t.equal((await relay.post('/update/chat', { uuid: shown, widget: { source: 'lk' } })).statusCode, 200)
  await console.waitFor((frame) => frame.type === 'chat_updated' && frame.data.chat.uuid === shown, 3000, 'the lk chat')
  t.notOk(console.ofType('chat_updated').some((frame) => frame.data.chat.uuid === hidden), 'another widget\'s chat never came')
})

t.test('signed with another secret: the relay refuses it (4401)', async (t) => {
  const relay = await startRelay(t)
  const printed = await token(['--role', 'user', '--chat', 'c1', '--sub', '7'], { JWT_SECRET: 'not-the-relays-secret-at-all' })
  t.equal(printed.code, 0)
  const refused = connect(relay.wsUrl, '/chat', { token: printed.stdout.trim() })
  t.equal((await refused.closed).code, 4401)
})

t.test('--dotenv supplies JWT_SECRET', async (t) => {
  const relay = await startRelay(t)
  const directory = await mkdtemp(join(tmpdir(), 'token-env-'))
  t.teardown(async () => await rm(directory, { recursive: true, force: true }))
  const envFile = join(directory, '.env')
  await writeFile(envFile, `# the relay's\nJWT_SECRET=${JWT_SECRET}\n`)
  const printed = await token(['--role', 'operator', '--chat', 'c9', '--sub', '3', '--dotenv', envFile], {})
  t.equal(printed.code, 0, printed.stderr)
  const operator = await joinSocket(relay.wsUrl, '/chat', { token: printed.stdout.trim() })
  t.teardown(() => closeAll(operator))
  t.match((await operator.next('connected')).data, { user: { id: 3, role: 'operator' }, chat: { uuid: 'c9' } })
  const missing = await token(['--role', 'user', '--chat', 'c', '--sub', '1', '--dotenv', join(directory, 'absent')], {})
  t.equal(missing.code, 2, 'a file that is not there: exit 2')
  t.match(missing.stderr, /--dotenv/)
})

t.test('bad flags: a clear message, the usage, exit 2, nothing on stdout', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['--chat', 'c', '--sub', '7'], /--role is required/],
    [['--role', 'admin', '--chat', 'c', '--sub', '7'], /--role "admin": use user or operator/],
    [['--role', 'user', '--sub', '7'], /--role user needs --chat/],
    [['--role', 'user', '--chat', 'c'], /--sub is required/],
    [['--role', 'user', '--chat', 'c', '--sub', '7', '--ttl', '5x'], /--ttl "5x"/],
    [['--role', 'user', '--chat', 'c', '--sub', '7', '--ttl', '0'], /--ttl "0"/],
    [['--role', 'user', '--chat', 'c', '--sub', '7', '--ttl', '31d'], /between 1s and 30d/],
    [['--role', 'user', '--chat', 'c', '--sub', '7', '--sources-widgets', 'a'], /are for operators/],
    [['--role', 'operator', '--sub', '7', '--sources-widgets', ' , '], /--sources-widgets needs at least one value/],
    [['--role', 'user', '--chat', 'c', '--sub', '7', '--frobnicate'], /Unknown option '--frobnicate'/],
    [['--role', 'user', '--chat', 'c', '--sub', '7', 'stray'], /Unexpected argument 'stray'/],
    [['--role'], /--role/]
  ]
  for (const [args, message] of cases) {
    const result = await token(args)
    t.equal(result.code, 2, `${args.join(' ')}: exit 2`)
    t.match(result.stderr, message, `${args.join(' ')}: says why`)
    t.match(result.stderr, /usage: npm run token/)
    t.equal(result.stdout, '', 'no token printed')
  }
  const spawned = await command(['--role', 'user', '--chat', 'c', '--sub', '7', '--ttl', 'forever'])
  t.equal(spawned.code, 2, 'the command exits 2')
  t.match(spawned.stderr, /--ttl "forever"/)
  t.equal(spawned.stdout, '')
  const help = await token(['--help'])
  t.equal(help.code, 0, '--help: exit 0')
  t.match(help.stdout, /usage: npm run token -- --role user\|operator --sub <id>/)
})

t.test('no usable secret: exit 1 with what to do, nothing on stdout', async (t) => {
  const args = ['--role', 'user', '--chat', 'c', '--sub', '7']
  const none = await command(args, {})
  t.equal(none.code, 1, 'the command exits 1')
  t.match(none.stderr, /JWT_SECRET is not set\. Without it the relay makes up a new secret at every start/)
  t.match(none.stderr, /JWT_SECRET=<it> npm run token/)
  t.equal(none.stdout, '')
  const short = await token(args, { JWT_SECRET: 'short' })
  t.equal(short.code, 1)
  t.match(short.stderr, /JWT_SECRET must NOT have fewer than 16 characters/, 'the relay\'s own rule, in its words')
  const pem = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString()
  const publicKey = await token(args, { JWT_PUBLIC_KEY: pem })
  t.equal(publicKey.code, 1)
  t.match(publicKey.stderr, /JWT_PUBLIC_KEY is set: the relay verifies ES256 tokens, which only the holder of the private key can sign/)
  const both = await token(args, { JWT_SECRET, JWT_PUBLIC_KEY: pem })
  t.equal(both.code, 1)
  t.match(both.stderr, /exclusive/)
})

t.test('npm run token runs the built script (dist/scripts/token.js, built by npm ci)', async (t) => {
  const scripts = (JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts
  t.equal(scripts.token, 'node dist/scripts/token.js')
  const stale = ['token', 'token-command'].some((name) => {
    const built = join(ROOT, 'dist', 'scripts', `${name}.js`)
    return !existsSync(built) || statSync(built).mtimeMs < statSync(join(ROOT, 'scripts', `${name}.ts`)).mtimeMs
  })
  if (stale) {
    t.comment('dist/scripts/ missing or older than scripts/ (run npm run build): not run through npm')
    return
  }
  const relay = await startRelay(t)
  const chat = randomUUID()
  const printed = await run('npm', ['run', '--silent', 'token', '--', '--role', 'user', '--chat', chat, '--sub', '5'], { JWT_SECRET, npm_config_update_notifier: 'false' })
  t.equal(printed.code, 0, printed.stderr)
  const customer = await joinSocket(relay.wsUrl, '/chat', { token: printed.stdout.trim() })
  t.teardown(() => closeAll(customer))
  t.match((await customer.next('connected')).data, { user: { id: 5 }, chat: { uuid: chat } })
  const bad = await run('npm', ['run', '--silent', 'token', '--', '--role', 'nobody'], { JWT_SECRET, npm_config_update_notifier: 'false' })
  t.equal(bad.code, 2, 'exit 2 through npm too')
})
