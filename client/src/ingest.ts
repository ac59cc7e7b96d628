/**
 * A backend's client for the relay's HTTP ingest (SPEC "HTTP ingest"): one typed method per route. Each
 * publishing call carries an `Idempotency-Key` (made here, or the caller's) that every retry of the call
 * reuses, so a retry never publishes twice. Retried, within bounds: 502/503/504 (honouring `Retry-After`),
 * `409 IDEMPOTENCY_IN_PROGRESS`, network errors and timeouts, and a batch that stopped at a 503. Any other
 * answer fails at once with an IngestError. No runtime dependency: global fetch and crypto (browsers, Node 20).
 */
import type { Static } from 'typebox'
import type {
  AssignedChat, BatchResults, Chat, ChatCustomers, GlobalBody, HttpError, MessageBody, OnlineUser, Operator, PublishingRoute
} from '../../src/protocol/protocol.js'

export type { AssignedChat, Chat, ChatCustomers, MessageBody, OnlineUser, Operator, PublishingRoute }
export type GlobalData = Static<typeof GlobalBody>
export type BatchResult = Static<typeof BatchResults>['results'][number]
/** The relay's error answer: `{statusCode, code?, error, message}`. */
export type RelayErrorBody = Static<typeof HttpError>

/** A top-level body may carry fields the relay passes through untouched (its objects are open), e.g. an operator's status. */
export type WithExtras<T> = T & { [field: string]: unknown }

/** The body each publishing route takes (an event of POST /batch names its route and carries one). */
export interface IngestBodies {
  '/message': MessageBody
  '/update/chat': WithExtras<Chat>
  '/update/operators': Array<WithExtras<Operator>>
  '/global': GlobalData
  '/notifications/chat': WithExtras<AssignedChat>
}
/** Every publishing route of the relay must have its body above: a new route fails to compile here. */
export type BatchEvent = { [Route in PublishingRoute]: { route: Route, body: IngestBodies[Route] } }[PublishingRoute]

/** The part of `fetch` this client uses: global fetch fits, and so does a test double. */
export type FetchLike = (url: string, init: {
  method: string
  headers: Record<string, string>
  body?: string
  signal?: AbortSignal
}) => Promise<{ status: number, headers: { get: (name: string) => string | null }, text: () => Promise<string> }>

export interface RetryOptions {
  /** Tries per call, the first included (default 5; 1: never retry). */
  attempts?: number
  /** Backoff without `Retry-After`: a random wait up to base × 2^(retry − 1), at most maxDelayMs (250, 5000). */
  baseDelayMs?: number
  maxDelayMs?: number
  /** The most one call waits between its tries in total, `Retry-After` included (default 30 s). */
  maxTotalWaitMs?: number
}

export interface IngestClientOptions {
  /** The relay's base URL, e.g. `http://127.0.0.1:4000` (a path prefix is kept). */
  url: string
  /** One of the relay's API_TOKEN values. */
  apiToken: string
  fetch?: FetchLike
  retries?: RetryOptions
  /** Each try is abandoned (and retried) after this long (default 10 s). */
  timeoutMs?: number
  /** How retries wait, and the jitter source of the backoff: injectable for tests. */
  sleep?: (ms: number) => Promise<void>
  random?: () => number
}

export interface CallOptions {
  /** Your own key (1-200 printable ASCII characters), e.g. your event's id; default: a random UUID. */
  idempotencyKey?: string
  signal?: AbortSignal
}

export interface Published {
  idempotencyKey: string
  /** The relay answered with a stored answer (`Idempotent-Replayed: true`): this call published nothing new. */
  replayed: boolean
  attempts: number
}

/** Results still `{status: 503}` after the retries name the events that were not published. */
export interface BatchOutcome extends Published {
  results: BatchResult[]
}

export interface IngestClient {
  message: (body: MessageBody, options?: CallOptions) => Promise<Published>
  updateChat: (chat: IngestBodies['/update/chat'], options?: CallOptions) => Promise<Published>
  updateOperators: (operators: IngestBodies['/update/operators'], options?: CallOptions) => Promise<Published>
  global: (data: GlobalData, options?: CallOptions) => Promise<Published>
  notifyChat: (chat: IngestBodies['/notifications/chat'], options?: CallOptions) => Promise<Published>
  /** Any publishing route by name. */
  publish: <Route extends PublishingRoute>(route: Route, body: IngestBodies[Route], options?: CallOptions) => Promise<Published>
  batch: (events: BatchEvent[], options?: CallOptions) => Promise<BatchOutcome>
  onlineUsers: (options?: { signal?: AbortSignal }) => Promise<OnlineUser[]>
  customersOnline: (chatUuids: string[], options?: { signal?: AbortSignal }) => Promise<ChatCustomers[]>
}

/**
 * A call that failed for good. `status` is the HTTP status (undefined for `NETWORK_ERROR` and `TIMEOUT`);
 * `code` and `message` are the relay's (e.g. `400 FST_ERR_VALIDATION` naming the field, `401 UNAUTHORIZED`,
 * `503 BUS_UNAVAILABLE` once the retries are spent).
 */
export class IngestError extends Error {
  override name = 'IngestError'
  constructor (
    message: string,
    readonly status: number | undefined,
    readonly code: string | undefined,
    readonly details: { attempts: number, idempotencyKey?: string, body?: unknown, cause?: unknown }
  ) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause })
  }

  get attempts (): number { return this.details.attempts }
  get idempotencyKey (): string | undefined { return this.details.idempotencyKey }
}

interface Answer { body: unknown, replayed: boolean, attempts: number }
interface Call { method: 'GET' | 'POST', path: string, body?: unknown, key?: string, signal?: AbortSignal | undefined }
/** One try: the answer, or why to try again (and when the relay said to). */
type Try = { answer: Answer } | { retry: IngestError, afterMs?: number | undefined, answer?: Answer }

const RETRIED_STATUSES = new Set([502, 503, 504])

/** A v4 UUID from Web Crypto; randomUUID is missing in insecure browser contexts, getRandomValues is not. */
function newKey (): string {
  if (typeof globalThis.crypto.randomUUID === 'function') return globalThis.crypto.randomUUID()
  const bytes = globalThis.crypto.getRandomValues(new Uint8Array(16))
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x40
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}

/** `Retry-After` in ms: delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function retryAfterMs (header: string | null): number | undefined {
  if (header === null || header.trim() === '') return undefined
  if (/^\s*\d+\s*$/.test(header)) return Number(header) * 1000
  // An HTTP date names its day and month; bare numbers such as "-1" or "1.5" are not one.
  const date = /[a-z]{3}/i.test(header) ? Date.parse(header) : NaN
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now())
}

function parseJson (text: string): unknown {
  try {
    return text === '' ? undefined : JSON.parse(text)
  } catch {
    return undefined
  }
}

/** A batch that stopped at an unavailable store: resent whole with its key, it publishes only the rest. */
function stoppedAt503 (body: unknown): boolean {
  const results = (body as { results?: BatchResult[] } | undefined)?.results ?? []
  const stop = results.find((result): result is { status: number, error: string } => 'status' in result && result.status >= 500)
  return stop?.status === 503
}

export function createIngestClient (options: IngestClientOptions): IngestClient {
  const base = options.url.endsWith('/') ? options.url : `${options.url}/`
  const fetchImpl: FetchLike = options.fetch ?? (async (url, init) => await globalThis.fetch(url, init))
  const attempts = Math.max(1, options.retries?.attempts ?? 5)
  const baseDelayMs = options.retries?.baseDelayMs ?? 250
  const maxDelayMs = options.retries?.maxDelayMs ?? 5000
  const maxTotalWaitMs = options.retries?.maxTotalWaitMs ?? 30_000
  const timeoutMs = options.timeoutMs ?? 10_000
  const sleep = options.sleep ?? (async (ms: number) => await new Promise<void>((resolve) => { setTimeout(resolve, ms) }))
  const random = options.random ?? Math.random

  async function tryOnce (call: Call, attempt: number): Promise<Try> {
    const headers: Record<string, string> = { 'api-token': options.apiToken, accept: 'application/json' }
    if (call.body !== undefined) headers['content-type'] = 'application/json'
    if (call.key !== undefined) headers['idempotency-key'] = call.key
    const details = { attempts: attempt, ...(call.key === undefined ? {} : { idempotencyKey: call.key }) }
    const timeout = new AbortController()
    const timer = setTimeout(() => timeout.abort(), timeoutMs)
    const cancel = (): void => timeout.abort()
    call.signal?.addEventListener('abort', cancel, { once: true })
    let status: number
    let text: string
    let retryAfter: string | null
    let replayed: boolean
    try {
      const response = await fetchImpl(new URL(call.path.slice(1), base).href, {
        method: call.method, headers, signal: timeout.signal, ...(call.body === undefined ? {} : { body: JSON.stringify(call.body) })
      })
      text = await response.text()
      status = response.status
      retryAfter = response.headers.get('retry-after')
      replayed = response.headers.get('idempotent-replayed') === 'true'
    } catch (error) {
      if (call.signal?.aborted === true) throw call.signal.reason
      const timedOut = timeout.signal.aborted
      const reason = (error as { cause?: { code?: unknown } }).cause?.code
      const message = timedOut
        ? `no answer from the relay within ${timeoutMs} ms`
        : `relay unreachable: ${(error as Error).message}${typeof reason === 'string' ? ` (${reason})` : ''}`
      return { retry: new IngestError(message, undefined, timedOut ? 'TIMEOUT' : 'NETWORK_ERROR', { ...details, cause: error }) }
    } finally {
      clearTimeout(timer)
      call.signal?.removeEventListener('abort', cancel)
    }
    const body = parseJson(text)
    if (status >= 200 && status < 300) {
      if (body === undefined) throw new IngestError(`the relay answered ${status} without JSON`, status, 'INVALID_ANSWER', details)
      const answer = { body, replayed, attempts: attempt }
      return call.path === '/batch' && stoppedAt503(body) ? { retry: new IngestError('batch stopped at 503', 503, 'BATCH_INCOMPLETE', { ...details, body }), answer } : { answer }
    }
    const relayError = body as Partial<RelayErrorBody> | undefined
    const error = new IngestError(relayError?.message ?? (text.slice(0, 200) || `HTTP ${status}`), status, relayError?.code, { ...details, body })
    const retried = RETRIED_STATUSES.has(status) || (status === 409 && relayError?.code === 'IDEMPOTENCY_IN_PROGRESS')
    if (!retried) throw error
    return { retry: error, afterMs: retryAfterMs(retryAfter) }
  }

  async function send (call: Call): Promise<Answer> {
    let waited = 0
    for (let attempt = 1; ; attempt++) {
      call.signal?.throwIfAborted()
      const outcome = await tryOnce(call, attempt)
      if (!('retry' in outcome)) return outcome.answer
      const delay = outcome.afterMs ?? random() * Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1))
      if (attempt >= attempts || waited + delay > maxTotalWaitMs) {
        // A batch that is still incomplete answers with its results: they say which events were not published.
        if (outcome.answer !== undefined) return outcome.answer
        throw outcome.retry
      }
      waited += delay
      await sleep(delay)
    }
  }

  async function publish (route: PublishingRoute | '/batch', body: unknown, callOptions: CallOptions = {}): Promise<Published & { body: unknown }> {
    const idempotencyKey = callOptions.idempotencyKey ?? newKey()
    const answer = await send({ method: 'POST', path: route, body, key: idempotencyKey, signal: callOptions.signal })
    return { idempotencyKey, replayed: answer.replayed, attempts: answer.attempts, body: answer.body }
  }
  const published = async (route: PublishingRoute, body: unknown, callOptions?: CallOptions): Promise<Published> => {
    const { idempotencyKey, replayed, attempts: tries } = await publish(route, body, callOptions)
    return { idempotencyKey, replayed, attempts: tries }
  }

  return {
    message: async (body, callOptions) => await published('/message', body, callOptions),
    updateChat: async (chat, callOptions) => await published('/update/chat', chat, callOptions),
    updateOperators: async (operators, callOptions) => await published('/update/operators', operators, callOptions),
    global: async (data, callOptions) => await published('/global', data, callOptions),
    notifyChat: async (chat, callOptions) => await published('/notifications/chat', chat, callOptions),
    publish: async (route, body, callOptions) => await published(route, body, callOptions),
    batch: async (events, callOptions) => {
      const { body, ...outcome } = await publish('/batch', { events }, callOptions)
      return { ...outcome, results: (body as Static<typeof BatchResults>).results }
    },
    onlineUsers: async (callOptions = {}) =>
      (await send({ method: 'GET', path: '/online-users', signal: callOptions.signal })).body as OnlineUser[],
    customersOnline: async (chatUuids, callOptions = {}) =>
      (await send({ method: 'POST', path: '/customers/online', body: { chats: chatUuids }, signal: callOptions.signal })).body as ChatCustomers[]
  }
}
