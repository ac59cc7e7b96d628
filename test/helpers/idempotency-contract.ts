import { randomUUID } from 'node:crypto'
import type { Test } from 'tap'
import type { IdempotencyClaim, IdempotencyStore } from '../../src/stores/idempotency.js'
import { eventually } from './cluster.js'

/** The idempotency store contract, for every store (memory, one Redis, a cluster): a claim is atomic, and only its own token completes or releases it. */
export async function storeContract (t: Test, store: IdempotencyStore, key = randomUUID()): Promise<void> {
  const route = '/global'
  const mine: IdempotencyClaim = { route, key, token: 'mine', bodyHash: 'h1' }
  const theirs: IdempotencyClaim = { route, key, token: 'theirs', bodyHash: 'h1' }
  t.same(await store.claim(mine, 10_000), { state: 'claimed' })
  t.same(await store.claim(theirs, 10_000), { state: 'pending', bodyHash: 'h1' }, 'a second claim sees the pending marker')
  t.same(await store.claim({ ...theirs, route: '/update/chat' }, 10_000), { state: 'claimed' }, 'the same key on another route is another record')
  t.equal(await store.complete(theirs, { status: 200, body: 'no' }, 10_000), false, 'another token cannot store an answer')
  await store.release(theirs)
  t.same(await store.claim(theirs, 10_000), { state: 'pending', bodyHash: 'h1' }, 'nor release the claim')
  t.equal(await store.renew(mine, 10_000), true)
  t.equal(await store.complete(mine, { status: 200, body: '{"ok":true}' }, 10_000), true)
  t.same(await store.claim(theirs, 10_000), { state: 'answered', bodyHash: 'h1', answer: { status: 200, body: '{"ok":true}' } })
  t.equal(await store.renew(mine, 10_000), false, 'an answered key is no claim any more')

  const released: IdempotencyClaim = { route, key: `${key}-released`, token: 'a', bodyHash: 'h2' }
  await store.claim(released, 10_000)
  await store.release(released)
  t.same(await store.claim({ ...released, token: 'b' }, 10_000), { state: 'claimed' }, 'a released key can be claimed again')

  const lapsing: IdempotencyClaim = { route, key: `${key}-lapsing`, token: 'a', bodyHash: 'h3' }
  await store.claim(lapsing, 100)
  await eventually(async () => (await store.claim({ ...lapsing, token: 'b' }, 10_000)).state === 'claimed', 3000, 'the lease lapses')
  t.equal(await store.complete(lapsing, { status: 200, body: '{}' }, 10_000), false, 'a lapsed claim stores nothing')
}
