import type { ClaimOutcome, IdempotencyClaim, IdempotencyStore, IdempotentAnswer } from './idempotency.js'

export interface MemoryIdempotencyOptions {
  /** Records kept; past it the oldest written go first (they expire first too). */
  maxRecords?: number
  /** The clock in milliseconds (tests inject one). */
  now?: () => number
}

interface MemoryRecord {
  expiresAt: number
  bodyHash: string
  /** The claim's token while pending; undefined once answered. */
  token?: string
  answer?: IdempotentAnswer
}

/** One process's idempotency records: a map in write order, each with its expiry, bounded by count. */
export class MemoryIdempotency implements IdempotencyStore {
  readonly #maxRecords: number
  readonly #now: () => number
  /** Insertion order is write order: the first record is the oldest written. */
  readonly #records = new Map<string, MemoryRecord>()

  constructor (options: MemoryIdempotencyOptions = {}) {
    this.#maxRecords = options.maxRecords ?? 100_000
    this.#now = options.now ?? Date.now
  }

  /** Records held now, expired ones not yet swept included. */
  get size (): number {
    return this.#records.size
  }

  async claim (claim: IdempotencyClaim, leaseMs: number): Promise<ClaimOutcome> {
    this.#sweep()
    const record = this.#live(claim)
    if (record?.answer !== undefined) return { state: 'answered', bodyHash: record.bodyHash, answer: record.answer }
    if (record !== undefined) return { state: 'pending', bodyHash: record.bodyHash }
    this.#write(claim, { expiresAt: this.#now() + leaseMs, bodyHash: claim.bodyHash, token: claim.token })
    return { state: 'claimed' }
  }

  async renew (claim: IdempotencyClaim, leaseMs: number): Promise<boolean> {
    const record = this.#own(claim)
    if (record === undefined) return false
    record.expiresAt = this.#now() + leaseMs
    return true
  }

  async complete (claim: IdempotencyClaim, answer: IdempotentAnswer, ttlMs: number): Promise<boolean> {
    if (this.#own(claim) === undefined) return false
    this.#write(claim, { expiresAt: this.#now() + ttlMs, bodyHash: claim.bodyHash, answer })
    return true
  }

  async release (claim: IdempotencyClaim): Promise<void> {
    if (this.#own(claim) !== undefined) this.#records.delete(recordKey(claim))
  }

  #live (claim: IdempotencyClaim): MemoryRecord | undefined {
    const key = recordKey(claim)
    const record = this.#records.get(key)
    if (record === undefined || record.expiresAt > this.#now()) return record
    this.#records.delete(key)
    return undefined
  }

  /** The record while it is this claim's pending marker. */
  #own (claim: IdempotencyClaim): MemoryRecord | undefined {
    const record = this.#live(claim)
    return record?.token === claim.token ? record : undefined
  }

  #write (claim: IdempotencyClaim, record: MemoryRecord): void {
    const key = recordKey(claim)
    this.#records.delete(key)
    this.#records.set(key, record)
    while (this.#records.size > this.#maxRecords) {
      const oldest = this.#records.keys().next()
      if (oldest.done === true) break
      this.#records.delete(oldest.value)
    }
  }

  /** Drops expired records from the oldest end, a few per call, so an idle map still shrinks as it is used. */
  #sweep (): void {
    const now = this.#now()
    let budget = 16
    for (const [key, record] of this.#records) {
      if (budget-- === 0 || record.expiresAt > now) return
      this.#records.delete(key)
    }
  }
}

/** Length-prefixed: no two (route, key) pairs share a record. */
function recordKey (claim: IdempotencyClaim): string {
  return `${claim.route.length}:${claim.route}${claim.key}`
}
