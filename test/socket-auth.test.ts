import { generateKeyPairSync } from 'node:crypto'
import { createSigner } from 'fast-jwt'
import t, { type Test } from 'tap'
import { closeAll, connect, join } from './helpers/client.js'
import { JWT_SECRET, customerToken, operatorToken, startRelay, token } from './helpers/relay.js'

const b64 = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64url')
const inAnHour = (): number => Math.floor(Date.now() / 1000) + 3600

async function refusedWith (t: Test, url: string, path: '/chat' | '/broadcast', options: Parameters<typeof connect>[2], code: number, what: string): Promise<void> {
  const client = connect(url, path, options)
  const closed = await client.closed
  t.equal(closed.code, code, what)
  t.same(client.frames, [], `${what}: no frame before the close`)
}

t.test('4401 for a missing, forged, expired or wrongly signed token', async (t) => {
  const relay = await startRelay(t)
  const claims = { sub: '1', role: 'user', chat: 'c1' }
  const cases: Array<[string, string | undefined]> = [
    ['missing token', undefined],
    ['garbage', 'not.a.jwt'],
    ['wrong secret', createSigner({ key: 'another-secret-of-enough-length', expiresIn: 60_000 })(claims)],
    ['expired', createSigner({ key: JWT_SECRET, expiresIn: 1 })({ ...claims, iat: Math.floor(Date.now() / 1000) - 100 })],
    ['alg none', `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ ...claims, exp: inAnHour() })}.`],
    ['unexpected algorithm HS384', createSigner({ key: JWT_SECRET, algorithm: 'HS384', expiresIn: 60_000 })(claims)],
    ['no exp claim', createSigner({ key: JWT_SECRET, noTimestamp: true })(claims)],
    ['no role claim', createSigner({ key: JWT_SECRET, expiresIn: 60_000 })({ sub: '1', chat: 'c1' })],
    ['no sub claim', createSigner({ key: JWT_SECRET, expiresIn: 60_000 })({ role: 'user', chat: 'c1' })]
  ]
  for (const [what, jwt] of cases) {
    await refusedWith(t, relay.wsUrl, '/chat', jwt === undefined ? {} : { token: jwt }, 4401, what)
  }
  await refusedWith(t, relay.wsUrl, '/broadcast', { bearer: 'not.a.jwt' }, 4401, 'bad bearer on /broadcast')
})

t.test('4403 for a role or chat the token does not allow', async (t) => {
  const relay = await startRelay(t)
  await refusedWith(t, relay.wsUrl, '/broadcast', { token: customerToken(1, 'c1') }, 4403, 'a customer on /broadcast')
  await refusedWith(t, relay.wsUrl, '/chat', { token: operatorToken(2) }, 4403, '/chat without a chat claim')
  await refusedWith(t, relay.wsUrl, '/chat', { token: customerToken(1, 'c1'), query: { chat: 'c2' } }, 4403, 'asking for another chat')
  await refusedWith(t, relay.wsUrl, '/chat', { token: token({ sub: '3', role: 'admin', chat: 'c1' }) }, 4403, 'an unknown role')
})

t.test('a good token is accepted from the query or a Bearer header, and the first frame is connected', async (t) => {
  const relay = await startRelay(t)
  const viaQuery = await join(relay.wsUrl, '/chat', { token: customerToken(11, 'c1'), query: { chat: 'c1' } })
  const viaHeader = await join(relay.wsUrl, '/broadcast', { bearer: operatorToken(12) })
  const bare = await join(relay.wsUrl, '/chat', { token: token({ sub: '13', role: 'operator', chat: 'c1' }) })
  t.teardown(() => closeAll(viaQuery, viaHeader, bare))
  const first = viaQuery.frames[0]
  t.equal(first?.type, 'connected')
  t.match(first?.data, { connection_id: String, user: { id: 11, role: 'user', firstname: 'Customer11' }, chat: { uuid: 'c1' } })
  t.equal(viaHeader.frames[0]?.type, 'connected')
  t.notOk('chat' in (viaHeader.frames[0]?.data as object), 'no chat on /broadcast')
  t.same(bare.frames[0]?.data.user, { id: 13, role: 'operator' }, 'without a user claim the user is built from sub and role')
  t.not(viaQuery.frames[0]?.data.connection_id, bare.frames[0]?.data.connection_id)
})

t.test('ALLOWED_ORIGINS is checked on upgrade', async (t) => {
  const relay = await startRelay(t, { ALLOWED_ORIGINS: 'https://shop.example,https://console.example' })
  await refusedWith(t, relay.wsUrl, '/chat', { token: customerToken(1, 'c1'), origin: 'https://evil.example' }, 4403, 'a foreign origin')
  await refusedWith(t, relay.wsUrl, '/chat', { token: customerToken(1, 'c1') }, 4403, 'no origin at all')
  const allowed = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1'), origin: 'https://shop.example' })
  t.teardown(() => closeAll(allowed))
  t.equal(allowed.frames[0]?.type, 'connected')
})

for (const [algorithm, type] of [['RS256', 'rsa'], ['ES256', 'ec']] as const) {
  t.test(`${algorithm}: tokens signed by the private key pass; HS256 with the public key as secret does not`, async (t) => {
    const pair = type === 'rsa'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : generateKeyPairSync('ec', { namedCurve: 'P-256' })
    const publicPem = pair.publicKey.export({ type: 'spki', format: 'pem' }).toString()
    const privatePem = pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
    const relay = await startRelay(t, { JWT_SECRET: '', JWT_PUBLIC_KEY: publicPem })
    const claims = { sub: '5', role: 'user', chat: 'c1' }
    const good = await join(relay.wsUrl, '/chat', { token: createSigner({ key: privatePem, algorithm, expiresIn: 60_000 })(claims) })
    t.teardown(() => closeAll(good))
    t.equal(good.frames[0]?.type, 'connected')
    const confused = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ ...claims, exp: inAnHour() })}`
    const { createHmac } = await import('node:crypto')
    const forged = `${confused}.${createHmac('sha256', publicPem).update(confused).digest('base64url')}`
    await refusedWith(t, relay.wsUrl, '/chat', { token: forged }, 4401, 'algorithm confusion')
    await refusedWith(t, relay.wsUrl, '/chat', { token: customerToken(5, 'c1') }, 4401, 'an HS256 token')
  })
}
