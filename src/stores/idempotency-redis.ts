import type { ClaimOutcome, IdempotencyClaim, IdempotencyStore, IdempotentAnswer } from './idempotency.js'
import { LuaScript, storeCommand, type RedisCommands } from './redis.js'
import { IdempotencyUnavailableError } from './store-errors.js'

export interface RedisIdempotencyOptions {
  /** A command connection (shared with the bus publisher): a claim never waits for Redis either. */
  client: RedisCommands
  prefix: string
  /**
   * Redis Cluster (with a Cluster client). It changes nothing, not even the key names: every record is
   * one key and every script touches only it, so each call is one slot already. Accepted so the stores
   * are configured alike.
   */
  sharded?: boolean
}

/** SET NX PX of the pending marker, or what holds the key: one step, so no claim slips in between. */
const CLAIM = new LuaScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1])`)

/** The steps below act only while the key still holds this claim's own marker (ARGV[1]). */
const RENEW = new LuaScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])`)

const COMPLETE = new LuaScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1`)

const RELEASE = new LuaScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])`)

/** A record as stored: a pending marker `{token, bodyHash}` or an answer `{bodyHash, status, body}`. */
interface StoredRecord {
  token?: unknown
  bodyHash?: unknown
  status?: unknown
  body?: unknown
}

/**
 * Idempotency records shared by every node, one string key each: `<prefix>idem:<route>:<key>`, holding a
 * pending marker (with the claim's lease as its TTL) or the stored answer (with IDEMPOTENCY_TTL_S). One
 * key per call, so the same names work on a Redis Cluster (a `{…}` in a client's key only picks the slot).
 */
export class RedisIdempotency implements IdempotencyStore {
  readonly #client: RedisCommands
  readonly #prefix: string

  constructor (options: RedisIdempotencyOptions) {
    this.#client = options.client
    this.#prefix = `${options.prefix}idem:`
  }

  async claim (claim: IdempotencyClaim, leaseMs: number): Promise<ClaimOutcome> {
    const held = await this.#command('claim', async () =>
      await CLAIM.run(this.#client, [this.#key(claim)], [marker(claim), leaseMs]))
    if (held === null) return { state: 'claimed' }
    const record = parseRecord(held)
    if (typeof record.status === 'number' && typeof record.body === 'string') {
      return { state: 'answered', bodyHash: String(record.bodyHash), answer: { status: record.status, body: record.body } }
    }
    return { state: 'pending', bodyHash: String(record.bodyHash) }
  }

  async renew (claim: IdempotencyClaim, leaseMs: number): Promise<boolean> {
    const renewed = await this.#command('renew', async () =>
      await RENEW.run(this.#client, [this.#key(claim)], [marker(claim), leaseMs]))
    return Number(renewed) === 1
  }

  async complete (claim: IdempotencyClaim, answer: IdempotentAnswer, ttlMs: number): Promise<boolean> {
    const stored = JSON.stringify({ bodyHash: claim.bodyHash, status: answer.status, body: answer.body })
    const completed = await this.#command('store answer', async () =>
      await COMPLETE.run(this.#client, [this.#key(claim)], [marker(claim), stored, ttlMs]))
    return Number(completed) === 1
  }

  async release (claim: IdempotencyClaim): Promise<void> {
    await this.#command('release', async () => await RELEASE.run(this.#client, [this.#key(claim)], [marker(claim)]))
  }

  #key (claim: IdempotencyClaim): string {
    return `${this.#prefix}${claim.route}:${claim.key}`
  }

  async #command<T> (what: string, run: () => Promise<T>): Promise<T> {
    // storeCommand reads only `status`, which a Cluster has as well ('ready' once it knows the slots).
    return await storeCommand(this.#client, IdempotencyUnavailableError, `idempotency: ${what}`, run)
  }
}

/** The claim's pending marker, the same string every time it is written or compared. */
function marker (claim: IdempotencyClaim): string {
  return JSON.stringify({ token: claim.token, bodyHash: claim.bodyHash })
}

function parseRecord (held: unknown): StoredRecord {
  try {
    const record: unknown = JSON.parse(String(held))
    if (record !== null && typeof record === 'object') return record
  } catch {}
  throw new IdempotencyUnavailableError('idempotency: unreadable record')
}
