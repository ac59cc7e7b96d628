import t from 'tap'
import { closeAll, join } from './helpers/client.js'
import { API_TOKEN, ROTATED_API_TOKEN, operatorToken, startRelay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

const routes: Array<[string, unknown]> = [
  ['/message', { message: messageOf(chatOf('c1')) }],
  ['/update/chat', chatOf('c1')],
  ['/update/operators', [{ id: 1, role: 'operator' }]],
  ['/global', { a: 1 }],
  ['/notifications/chat', chatOf('c1', { operator_user: { id: 3, role: 'operator' } })]
]

t.test('every ingest route answers 200 {ok: true} with a valid body and token', async (t) => {
  const relay = await startRelay(t)
  for (const [path, body] of routes) {
    const answer = await relay.post(path, body)
    t.equal(answer.statusCode, 200, path)
    t.same(JSON.parse(answer.body), { ok: true }, path)
  }
  const rotated = await relay.post('/global', { a: 1 }, ROTATED_API_TOKEN)
  t.equal(rotated.statusCode, 200, 'every token of the API_TOKEN list is accepted')
})

t.test('401 without or with a wrong Api-Token, on every route', async (t) => {
  const relay = await startRelay(t)
  for (const [path, body] of [...routes, ['/online-users', {}] as [string, unknown]]) {
    const missing = await relay.app.inject({ method: 'POST', url: path, payload: body as object })
    t.equal(missing.statusCode, 401, `${path} without token`)
    t.match(JSON.parse(missing.body), { statusCode: 401, message: /missing Api-Token/ })
    for (const wrong of ['nope', `${API_TOKEN}x`, API_TOKEN.slice(0, -1), `${API_TOKEN},${ROTATED_API_TOKEN}`]) {
      t.equal((await relay.post(path, body, wrong)).statusCode, 401, `${path} with a wrong token`)
    }
  }
  const online = await relay.app.inject({ method: 'GET', url: '/online-users' })
  t.equal(online.statusCode, 401)
})

t.test('400 names the invalid field', async (t) => {
  const relay = await startRelay(t)
  const cases: Array<[string, unknown, RegExp]> = [
    ['/message', { message: { id: 1, type: 'standard' } }, /chat/],
    ['/message', { message: { id: 'one', type: 'standard', chat: { uuid: 'c' } } }, /id/],
    ['/message', { message: { id: 1, type: 'shout', chat: { uuid: 'c' } } }, /type/],
    ['/message', { message: messageOf(chatOf('c')), event: 'message_removed' }, /event/],
    ['/message', { message: messageOf(chatOf('c'), { type: 'system', type_role: null }), event: 'message_deleted' }, /type_role/],
    ['/message', { message: messageOf(chatOf('c'), { type: 'system', type_role: null }) }, /type_role/],
    ['/update/chat', { status: 'new' }, /uuid/],
    ['/update/operators', { id: 1 }, /array/],
    ['/update/operators', [{ role: 'operator' }], /id/],
    ['/global', [1, 2], /object/],
    ['/notifications/chat', chatOf('c1'), /operator_user/]
  ]
  for (const [path, body, field] of cases) {
    const answer = await relay.post(path, body)
    t.equal(answer.statusCode, 400, `${path} ${JSON.stringify(body).slice(0, 60)}`)
    t.match(JSON.parse(answer.body).message, field, `message names ${String(field)}`)
  }
  const notJson = await relay.app.inject({
    method: 'POST', url: '/global', payload: '{"a":', headers: { 'api-token': API_TOKEN, 'content-type': 'application/json' }
  })
  t.equal(notJson.statusCode, 400, 'malformed JSON is 400')
})

t.test('413 over BODY_LIMIT and 415 for anything but JSON', async (t) => {
  const relay = await startRelay(t, { BODY_LIMIT: '2048' })
  const big = await relay.post('/global', { blob: 'x'.repeat(4096) })
  t.equal(big.statusCode, 413)
  for (const contentType of ['text/plain', 'application/x-www-form-urlencoded', 'application/xml']) {
    const answer = await relay.app.inject({ method: 'POST', url: '/global', payload: 'a=1', headers: { 'api-token': API_TOKEN, 'content-type': contentType } })
    t.equal(answer.statusCode, 415, contentType)
  }
  const charset = await relay.app.inject({
    method: 'POST', url: '/global', payload: '{"a":1}', headers: { 'api-token': API_TOKEN, 'content-type': 'application/json; charset=utf-8' }
  })
  t.equal(charset.statusCode, 200, 'application/json with a charset is accepted')
})

t.test('503 with Retry-After when the bus is unavailable: nothing is acknowledged', async (t) => {
  const relay = await startRelay(t)
  await relay.app.stores.bus.close()
  for (const [path, body] of routes) {
    const answer = await relay.post(path, body)
    t.equal(answer.statusCode, 503, path)
    t.equal(answer.headers['retry-after'], '1')
    t.match(JSON.parse(answer.body), { code: 'BUS_UNAVAILABLE' })
  }
  const ready = await relay.app.inject({ method: 'GET', url: '/ready' })
  t.equal(ready.statusCode, 503)
  const health = await relay.app.inject({ method: 'GET', url: '/health' })
  t.equal(health.statusCode, 200, '/health only says the process is alive')
})

t.test('/online-users answers one entry per operator with its console sessions', async (t) => {
  const relay = await startRelay(t)
  const empty = await relay.app.inject({ method: 'GET', url: '/online-users', headers: { 'api-token': API_TOKEN } })
  t.same(JSON.parse(empty.body), [])
  const consoles = [
    await join(relay.wsUrl, '/broadcast', { token: operatorToken(7, { sources: { widgets: ['lk'], departments: [1] } }) }),
    await join(relay.wsUrl, '/broadcast', { token: operatorToken(7, { sources: { widgets: ['site'] } }) }),
    await join(relay.wsUrl, '/broadcast', { token: operatorToken(8) })
  ]
  const inChat = await join(relay.wsUrl, '/chat', { token: operatorToken(9, { chat: 'c1' }) })
  t.teardown(() => closeAll(...consoles, inChat))
  for (const method of ['GET', 'POST'] as const) {
    const answer = await relay.app.inject({ method, url: '/online-users', headers: { 'api-token': API_TOKEN } })
    t.equal(answer.statusCode, 200)
    const users = (JSON.parse(answer.body) as Array<{ user: { id: number }, sessions: number, sources: { widgets: string[], departments: unknown[] }, connected_at: string }>)
      .sort((a, b) => a.user.id - b.user.id)
    t.same(users.map((entry) => [entry.user.id, entry.sessions]), [[7, 2], [8, 1]], `${method}: /chat sockets are not console sessions`)
    t.same(users[0]?.sources, { widgets: ['lk', 'site'], departments: [1] })
    t.ok(!Number.isNaN(Date.parse(users[0]?.connected_at ?? '')))
  }
  consoles[2]?.close()
  await consoles[2]?.closed
  const deadline = Date.now() + 3000
  let ids: number[] = []
  while (Date.now() < deadline) {
    const answer = await relay.app.inject({ method: 'GET', url: '/online-users', headers: { 'api-token': API_TOKEN } })
    ids = (JSON.parse(answer.body) as Array<{ user: { id: number } }>).map((entry) => entry.user.id)
    if (!ids.includes(8)) break
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  t.same(ids, [7], 'a closed console leaves')
})
