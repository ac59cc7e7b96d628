/**
 * Ingest idempotency: one record per route and `Idempotency-Key`, shared by every node. A request claims
 * the key with a pending marker (a lease its node renews while it runs), then either stores its final
 * answer in place of the marker (kept for IDEMPOTENCY_TTL_S) or releases the marker so a retry may run.
 * The store only keeps records; what a repeat is answered is decided in src/idempotency.ts.
 */
export interface IdempotentAnswer {
  status: number
  /** The answer's body as it was sent (JSON text). */
  body: string
}

/** One request's hold on a key: `token` tells its own marker from another request's. */
export interface IdempotencyClaim {
  route: string
  key: string
  token: string
  /** Hash of the request body, so the same key with another body is told apart. */
  bodyHash: string
}

export type ClaimOutcome =
  | { state: 'claimed' }
  /** Another request holds the key and is still running. */
  | { state: 'pending', bodyHash: string }
  | { state: 'answered', bodyHash: string, answer: IdempotentAnswer }

export interface IdempotencyStore {
  /** Claims the key for `leaseMs` unless a record holds it (then says which, atomically). */
  claim: (claim: IdempotencyClaim, leaseMs: number) => Promise<ClaimOutcome>
  /** Extends this claim's lease; false when the key is no longer this claim's (expired, replaced). */
  renew: (claim: IdempotencyClaim, leaseMs: number) => Promise<boolean>
  /** Replaces this claim's marker with the answer for `ttlMs`; false when the key is no longer this claim's. */
  complete: (claim: IdempotencyClaim, answer: IdempotentAnswer, ttlMs: number) => Promise<boolean>
  /** Drops this claim's marker (nothing was done: a retry may run); another request's record stays. */
  release: (claim: IdempotencyClaim) => Promise<void>
}
