import { generateKeyPairSync, randomUUID } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { createTokenVerifier } from '../src/auth.js'
import { ConfigError, loadConfig } from '../src/config.js'
import { DEMO_TOKEN_TTL_MS, demoFile } from '../src/demo.js'
import { closeAll, join as joinSocket } from './helpers/client.js'
import { startDemoRelay } from './helpers/demo.js'
import { buildRelay, freePort, RelayProcess } from './helpers/process.js'
import { API_TOKEN, JWT_SECRET, operatorToken, startRelay, type Relay } from './helpers/relay.js'

const DEMO = { DEMO: 'true' }

async function mint (relay: Relay, request: Record<string, unknown>): Promise<{ statusCode: number, json: Record<string, unknown> & { token: string, chat?: string } }> {
  const response = await relay.app.inject({ method: 'POST', url: '/demo/token', payload: request })
  return { statusCode: response.statusCode, json: response.json() }
}

t.test('without DEMO=true nothing of the demo is served', async (t) => {
  const relay = await startRelay(t)
  for (const url of ['/demo', '/demo/', '/demo/widget.html', '/demo/console.js', '/demo/sdk/index.js', '/demo/chats', '/demo/online-users']) {
    t.equal((await relay.app.inject({ method: 'GET', url })).statusCode, 404, `GET ${url}`)
  }
  for (const url of ['/demo/token', '/demo/note']) {
    const response = await relay.app.inject({ method: 'POST', url, payload: { role: 'user' } })
    t.equal(response.statusCode, 404, `POST ${url}`)
  }
})

t.test('DEMO=true with NODE_ENV=production is a start-up error that names DEMO', async (t) => {
  const secrets = { API_TOKEN, JWT_SECRET }
  t.throws(() => loadConfig({ ...secrets, DEMO: 'true', NODE_ENV: 'production' }), new ConfigError('DEMO=true is refused when NODE_ENV=production: the demo mints tokens for anyone who asks'))
  t.throws(() => loadConfig({ DEMO: 'true', NODE_ENV: 'production' }), /DEMO=true is refused/, 'named before any missing secret')
  t.throws(() => loadConfig({ DEMO: 'yes' }), /DEMO/)
  const publicKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString()
  t.throws(() => loadConfig({ DEMO: 'true', JWT_PUBLIC_KEY: publicKey }), /DEMO=true needs JWT_SECRET/, 'demo tokens are signed with the secret')
  t.equal(loadConfig({ ...secrets, NODE_ENV: 'production' }).DEMO, false, 'off by default')

  const server = await buildRelay(t)
  const relay = new RelayProcess(t, server, { ...secrets, NODE_ENV: 'production', DEMO: 'true', PORT: String(await freePort()) })
  const exit = await relay.exited
  t.equal(exit.code, 1, 'the process exits 1')
  t.match(relay.stderr.join(''), /configuration error: DEMO=true is refused when NODE_ENV=production/)
})

t.test('demo tokens: a customer gets a new chat announced to consoles; an operator gets its chat and sources', async (t) => {
  const relay = await startRelay(t, DEMO)
  const verify = createTokenVerifier(relay.config)
  const console = await joinSocket(relay.wsUrl, '/broadcast', { token: operatorToken(1) })
  t.teardown(() => closeAll(console))

  const customer = await mint(relay, { role: 'user', widget: 'lk', name: 'Ann' })
  t.equal(customer.statusCode, 200)
  const principal = verify(customer.json.token)
  t.equal(principal.role, 'user')
  t.equal(principal.chatUuid, customer.json.chat)
  t.match(principal.user, { role: 'user', firstname: 'Ann' })
  t.ok(Math.abs(principal.expiresAt - Date.now() - DEMO_TOKEN_TTL_MS) < 5000, 'short-lived: ten minutes')
  const announced = await console.waitFor((frame) => frame.type === 'chat_updated' && frame.data.chat.uuid === customer.json.chat)
  t.match(announced.data.chat, { widget: { source: 'lk' }, owner_user: { firstname: 'Ann' } })
  const chats = (await relay.app.inject({ method: 'GET', url: '/demo/chats' })).json()
  t.match(chats, [{ uuid: customer.json.chat, widget: { source: 'lk' } }], 'a console that opens later lists it')

  const again = await mint(relay, { role: 'user', chat: customer.json.chat, sub: String(principal.userId) })
  t.equal(verify(again.json.token).userId, principal.userId, 'a reconnect keeps its identity and chat')

  const operator = verify((await mint(relay, { role: 'operator', sub: '7', chat: customer.json.chat, sources: { widgets: ['lk'] } })).json.token)
  t.match(operator, { role: 'operator', userId: '7', chatUuid: customer.json.chat })
  t.same([...operator.sources?.widgets ?? []], ['lk'])

  for (const bad of [{ role: 'admin' }, { role: 'user', sub: 'x' }, { role: 'user', chat: '../x' }, { role: 'user', extra: 1 }, {}]) {
    t.equal((await mint(relay, bad)).statusCode, 400, `refused: ${JSON.stringify(bad)}`)
  }
})

t.test('a demo note reaches operators in the chat and not the customer; it needs an operator token of the chat', async (t) => {
  const relay = await startRelay(t, DEMO)
  const customerGrant = (await mint(relay, { role: 'user', widget: 'lk' })).json
  const chat = customerGrant.chat ?? ''
  const operatorGrant = (await mint(relay, { role: 'operator', sub: '7', chat })).json
  const customer = await joinSocket(relay.wsUrl, '/chat', { token: customerGrant.token })
  const operator = await joinSocket(relay.wsUrl, '/chat', { token: operatorGrant.token })
  t.teardown(() => closeAll(customer, operator))

  const note = async (token: string | undefined, text = 'customer asked twice already'): Promise<number> => (await relay.app.inject({
    method: 'POST', url: '/demo/note', payload: { text }, headers: token === undefined ? {} : { authorization: `Bearer ${token}` }
  })).statusCode
  t.equal(await note(undefined), 401)
  t.equal(await note('not-a-token'), 401)
  t.equal(await note(customerGrant.token), 403, 'a customer cannot post notes')
  t.equal(await note((await mint(relay, { role: 'operator', sub: '7' })).json.token), 403, 'an operator token without a chat cannot')
  t.equal(await note(operatorGrant.token), 200)

  const added = await operator.waitFor((frame) => frame.type === 'message_added' && frame.data.message.type === 'note')
  t.match(added.data.message, { type: 'note', text: 'customer asked twice already', chat: { uuid: chat }, user: { id: 7, role: 'operator' } })
  t.ok(Number.isInteger(added.data.message.id) && added.data.message.id > 0, 'numbered by the relay')
  // A standard message after the note: once it is in, the note would have been too.
  await relay.post('/message', { message: { id: 9001, type: 'standard', text: 'after the note', chat: { uuid: chat } } }, API_TOKEN)
  await customer.waitFor((frame) => frame.type === 'message_added' && frame.data.message.id === 9001)
  t.notOk(customer.frames.some((frame) => frame.data?.message?.type === 'note'), 'the customer never gets the note')
})

t.test('online operators are proxied without an Api-Token', async (t) => {
  const relay = await startRelay(t, DEMO)
  const console = await joinSocket(relay.wsUrl, '/broadcast', { token: operatorToken(42, { sources: { widgets: ['lk'] } }) })
  t.teardown(() => closeAll(console))
  const online = (await relay.app.inject({ method: 'GET', url: '/demo/online-users' })).json()
  t.match(online, [{ user: { id: 42 }, sources: { widgets: ['lk'] }, sessions: 1 }])
})

t.test('pages and the SDK are served from their directories, and nothing outside them', async (t) => {
  const sdkDir = await mkdtemp(join(tmpdir(), 'demo-sdk-'))
  t.teardown(async () => await rm(sdkDir, { recursive: true, force: true }))
  await writeFile(join(sdkDir, 'index.js'), 'export const sdk = 1\n')
  const relay = await startDemoRelay(t, { sdkDir })
  const get = async (url: string): Promise<{ statusCode: number, type: string, body: string }> => {
    const response = await relay.app.inject({ method: 'GET', url })
    return { statusCode: response.statusCode, type: String(response.headers['content-type']), body: response.body }
  }
  t.equal((await relay.app.inject({ method: 'GET', url: '/demo' })).headers.location, '/demo/')
  t.match(await get('/demo/'), { statusCode: 200, type: /text\/html/, body: /widget\.html/ })
  t.match(await get('/demo/widget.html'), { statusCode: 200, type: /text\/html/ })
  t.match(await get('/demo/console.js'), { statusCode: 200, type: /text\/javascript/, body: /connectConsole/ })
  t.match(await get('/demo/demo.css'), { statusCode: 200, type: /text\/css/ })
  t.match(await get('/demo/sdk/index.js'), { statusCode: 200, type: /text\/javascript/, body: 'export const sdk = 1' })
  for (const url of ['/demo/sdk/missing.js', '/demo/..%2fpackage.json', '/demo/sdk/..%2f..%2fpackage.json', '/demo/.env', '/demo/nothing.html', `/demo/${randomUUID()}`]) {
    t.equal((await get(url)).statusCode, 404, url)
  }
  t.equal(demoFile('/srv/demo', '../package.json'), undefined)
  t.equal(demoFile('/srv/demo', 'a/../../x.js'), undefined)
  t.equal(demoFile('/srv/demo', 'sub/file.js'), '/srv/demo/sub/file.js')
})
