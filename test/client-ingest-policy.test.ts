import t from 'tap'
import { createIngestClient, retryAfterMs, type FetchLike } from '../client/src/ingest.js'

/**
 * The ingest client's retry policy against scripted answers (what the relay cannot be made to answer on
 * demand: long Retry-After values, dates, 409 in progress, silence). test/client-ingest.test.ts runs the
 * same client against the real relay.
 */
/** A fetch that answers from a script: each entry is a status, headers and body. */
function scripted (answers: Array<{ status: number, headers?: Record<string, string>, body?: unknown }>): { fetch: FetchLike, sent: () => number } {
  let index = 0
  const fetch: FetchLike = async () => {
    const answer = answers[Math.min(index++, answers.length - 1)]
    if (answer === undefined) throw new Error('empty script')
    const headers = new Headers(answer.headers)
    return { status: answer.status, headers, text: async () => JSON.stringify(answer.body ?? { ok: true }) }
  }
  return { fetch, sent: () => index }
}

const busDown = { status: 503, body: { statusCode: 503, code: 'BUS_UNAVAILABLE', error: 'Service Unavailable', message: 'bus is not connected' } }

t.test('Retry-After is honoured (seconds or a date), 409 IDEMPOTENCY_IN_PROGRESS is retried, and the waits are bounded', async (t) => {
  const waits: number[] = []
  const options = { url: 'http://relay.invalid/prefix', apiToken: 'x', random: () => 0.5, sleep: async (ms: number) => { waits.push(ms) } }
  const inProgress = { status: 409, headers: { 'retry-after': '1' }, body: { statusCode: 409, code: 'IDEMPOTENCY_IN_PROGRESS', error: 'Conflict', message: 'running' } }
  const script = scripted([{ ...busDown, headers: { 'retry-after': '7' } }, inProgress, busDown, { status: 200 }])
  const result = await createIngestClient({ ...options, fetch: script.fetch }).global({})
  t.equal(result.attempts, 4)
  t.same(waits, [7000, 1000, 500], 'Retry-After 7 s, then 1 s, then without it the backoff (0.5 × 250 × 2²)')

  waits.length = 0
  const dated = scripted([{ ...busDown, headers: { 'retry-after': new Date(Date.now() + 20_000).toUTCString() } }, { status: 200 }])
  await createIngestClient({ ...options, fetch: dated.fetch }).global({})
  t.ok(waits.length === 1 && (waits[0] ?? 0) > 15_000 && (waits[0] ?? 0) <= 20_000, `an HTTP date: waited ${waits.join()} ms`)

  waits.length = 0
  const long = scripted([{ ...busDown, headers: { 'retry-after': '20' } }])
  await t.rejects(createIngestClient({ ...options, fetch: long.fetch }).global({}),
    { name: 'IngestError', status: 503, code: 'BUS_UNAVAILABLE', message: 'bus is not connected', attempts: 2 }, 'a third try would wait past 30 s in total')
  t.same(waits, [20_000])

  waits.length = 0
  const down = scripted([busDown])
  await t.rejects(createIngestClient({ ...options, fetch: down.fetch, retries: { attempts: 3 } }).global({}), { name: 'IngestError', status: 503, attempts: 3 })
  t.equal(down.sent(), 3, 'attempts bounds the tries')
  const conflict = scripted([{ status: 409, body: { statusCode: 409, code: 'OTHER', error: 'Conflict', message: 'no' } }])
  await t.rejects(createIngestClient({ ...options, fetch: conflict.fetch }).global({}), { name: 'IngestError', status: 409, code: 'OTHER', attempts: 1 }, 'another 409 is final')
})

t.test('a try with no answer times out and is retried; an aborted call is not', async (t) => {
  const hung: FetchLike = async (_url, init) => await new Promise((_resolve, reject) => {
    init.signal?.addEventListener('abort', () => reject(new Error('aborted')))
  })
  const waits: number[] = []
  const client = createIngestClient({ url: 'http://relay.invalid', apiToken: 'x', fetch: hung, timeoutMs: 20, retries: { attempts: 2 }, sleep: async (ms) => { waits.push(ms) } })
  await t.rejects(client.global({}), { code: 'TIMEOUT', status: undefined, attempts: 2 })
  t.equal(waits.length, 1)
  const controller = new AbortController()
  const call = client.global({}, { signal: controller.signal })
  controller.abort(new Error('shutting down'))
  await t.rejects(call, { message: 'shutting down' }, 'the caller\'s abort reason, at once')
  t.equal(waits.length, 1, 'no retry after an abort')
})

t.test('Retry-After values: delta-seconds, an HTTP date, or nothing usable', async (t) => {
  t.equal(retryAfterMs('1'), 1000)
  t.equal(retryAfterMs(' 12 '), 12_000)
  t.equal(retryAfterMs(new Date(Date.now() - 5000).toUTCString()), 0, 'a date past: at once')
  for (const value of [null, '', 'soon', '-1', '1.5']) t.equal(retryAfterMs(value), undefined, `${JSON.stringify(value)}: the backoff decides`)
})
