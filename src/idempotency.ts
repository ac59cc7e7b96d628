import { createHash, randomUUID } from 'node:crypto'
import { Type } from 'typebox'
import type { Metrics } from './metrics.js'
import type { IdempotencyClaim, IdempotencyStore, IdempotentAnswer } from './stores/idempotency.js'

/** The request header, as documented; Node hands it to the hooks lowercased. */
export const IDEMPOTENCY_HEADER = 'Idempotency-Key'

/** 1–200 printable ASCII characters (space to tilde): what the header schema of an idempotent route accepts. */
export const IdempotencyKey = Type.String({
  minLength: 1,
  maxLength: 200,
  pattern: '^[\\x20-\\x7E]+$',
  description: 'Optional. A repeat of this key on the same route within `IDEMPOTENCY_TTL_S` is answered as the ' +
    'first request was (same status and body, header `Idempotent-Replayed: true`) and publishes nothing. ' +
    '1-200 printable ASCII characters.'
})

export type Admission =
  /** The key is this request's: run it, then `finish` with its answer. */
  | { kind: 'run', run: IdempotentRun }
  /** A request with this key and body was answered: answer the same, publish nothing. */
  | { kind: 'replay', answer: IdempotentAnswer }
  /** The key was used on this route with another body. */
  | { kind: 'mismatch' }
  /** Another request with this key is still running and did not answer within the wait. */
  | { kind: 'in_progress' }

export interface IdempotencyOptions {
  /** How long an answer is kept (IDEMPOTENCY_TTL_S). */
  ttlMs: number
  /** A claim's lease; its node renews it while the request runs, so a dead node's claim lapses within it. */
  leaseMs: number
  /** How long a repeat waits for a running first request before answering `in_progress`. */
  waitMs: number
}

export interface IdempotencyLog {
  warn: (object: object, message: string) => void
}

/** What a final answer is: kept and replayed. 5xx (nothing was published) and anything else is not. */
export function isFinal (status: number): boolean {
  return (status >= 200 && status < 300) || (status >= 400 && status < 500)
}

/** SHA-256 of the body as canonical JSON (keys sorted), so a retry need not repeat the same bytes. */
export function bodyHash (body: unknown): string {
  return createHash('sha256').update(canonicalJson(body)).digest('base64url')
}

function canonicalJson (value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (value !== null && typeof value === 'object') {
    const record = value as Record<string, unknown>
    return `{${Object.keys(record).sort().map((key) => `${JSON.stringify(key)}:${canonicalJson(record[key])}`).join(',')}}`
  }
  return JSON.stringify(value) ?? 'null'
}

/**
 * The decision for a request carrying `Idempotency-Key`: claim the key (run), replay a stored answer,
 * refuse another body on the same key, or wait for a first request still running, on any node.
 */
export class Idempotency {
  constructor (
    readonly store: IdempotencyStore,
    readonly options: IdempotencyOptions,
    readonly metrics: Metrics,
    readonly log: IdempotencyLog
  ) {}

  async admit (route: string, key: string, body: unknown): Promise<Admission> {
    const claim: IdempotencyClaim = { route, key, token: randomUUID(), bodyHash: bodyHash(body) }
    const deadline = Date.now() + this.options.waitMs
    let pause = 10
    for (;;) {
      const outcome = await this.store.claim(claim, this.options.leaseMs)
      if (outcome.state === 'claimed') return { kind: 'run', run: new IdempotentRun(this, claim) }
      if (outcome.bodyHash !== claim.bodyHash) return { kind: 'mismatch' }
      if (outcome.state === 'answered') return { kind: 'replay', answer: outcome.answer }
      // Pending: the first request answers, or releases the key (a 503) and the next claim is this one.
      const left = deadline - Date.now()
      if (left <= 0) return { kind: 'in_progress' }
      await new Promise((resolve) => setTimeout(resolve, Math.min(pause, left)))
      pause = Math.min(pause * 2, 100)
    }
  }

  /** A store write that failed after the answer was decided: the answer stands; logged and counted. */
  failed (operation: string, claim: IdempotencyClaim, error: unknown): void {
    this.metrics.idempotencyFailures.inc({ operation })
    this.log.warn({ err: error, route: claim.route, operation }, 'idempotency record not written')
  }
}

/** A claimed key while its request runs: the lease is renewed until `finish` stores or releases it. */
export class IdempotentRun {
  readonly #renewal: NodeJS.Timeout
  #finished = false

  constructor (readonly idempotency: Idempotency, readonly claim: IdempotencyClaim) {
    const { store, options } = idempotency
    this.#renewal = setInterval(() => {
      store.renew(claim, options.leaseMs).then((held) => {
        if (!held && !this.#finished) idempotency.failed('renew', claim, new Error('the claim lapsed while its request ran'))
      }, (error: unknown) => { idempotency.failed('renew', claim, error) })
    }, Math.max(1, Math.floor(options.leaseMs / 4)))
    this.#renewal.unref()
  }

  /** Stores a final answer for the key's TTL; releases the key otherwise (`body` undefined: not storable). */
  async finish (status: number, body: string | undefined): Promise<void> {
    if (this.#finished) return
    this.#finished = true
    clearInterval(this.#renewal)
    const { store, options } = this.idempotency
    try {
      if (body === undefined || !isFinal(status)) {
        await store.release(this.claim)
        return
      }
      const stored = await store.complete(this.claim, { status, body }, options.ttlMs)
      if (!stored) this.idempotency.failed('complete', this.claim, new Error('the claim lapsed before its answer was stored'))
    } catch (error) {
      this.idempotency.failed(body === undefined || !isFinal(status) ? 'release' : 'complete', this.claim, error)
    }
  }
}
