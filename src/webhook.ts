import { Compile } from 'typebox/compile'
import type { Metrics } from './metrics.js'
import { nestedDeeperThan } from './protocol/json.js'
import { Message, unroutableField, type User } from './protocol/protocol.js'

/** Forwards a client event to the backend and reads back the message it created, if any. */
export interface WebhookRequest {
  event: string
  chat: { uuid: string }
  user: User
  data: Record<string, unknown>
}

export type WebhookResult = { outcome: 'message', message: Message } | { outcome: 'accepted' }
export type WebhookFailure = 'webhook_timeout' | 'webhook_status' | 'webhook_network' | 'webhook_invalid_response'

export class WebhookError extends Error {
  override name = 'WebhookError'
  constructor (readonly reason: WebhookFailure, message: string) {
    super(message)
  }
}

const messageCheck = Compile(Message)
/** An answer carries one message: these bound what the relay parses and serializes again. */
const MAX_ANSWER_CHARS = 1024 * 1024
const MAX_ANSWER_DEPTH = 32

export class Webhook {
  constructor (
    readonly url: string,
    readonly token: string | undefined,
    readonly timeoutMs: number,
    readonly metrics: Metrics
  ) {}

  async call (request: WebhookRequest): Promise<WebhookResult> {
    const stop = this.metrics.webhookSeconds.startTimer()
    try {
      const result = await this.send(request)
      this.metrics.webhookCalls.inc({ outcome: result.outcome })
      return result
    } catch (error) {
      this.metrics.webhookCalls.inc({ outcome: error instanceof WebhookError ? error.reason : 'webhook_network' })
      throw error
    } finally {
      stop()
    }
  }

  private async send (request: WebhookRequest): Promise<WebhookResult> {
    const headers: Record<string, string> = { 'content-type': 'application/json' }
    if (this.token !== undefined) headers['api-token'] = this.token
    let response: Response
    let body: string
    try {
      response = await fetch(this.url, {
        method: 'POST',
        headers,
        body: JSON.stringify(request),
        signal: AbortSignal.timeout(this.timeoutMs)
      })
      body = await response.text()
    } catch (error) {
      const name = (error as Error).name
      if (name === 'TimeoutError' || name === 'AbortError') {
        throw new WebhookError('webhook_timeout', `webhook did not answer within ${this.timeoutMs} ms`)
      }
      throw new WebhookError('webhook_network', `webhook unreachable: ${(error as Error).message}`)
    }
    if (!response.ok) throw new WebhookError('webhook_status', `webhook answered ${response.status}`)
    if (body.trim() === '') return { outcome: 'accepted' }
    if (body.length > MAX_ANSWER_CHARS) throw new WebhookError('webhook_invalid_response', `webhook answer longer than ${MAX_ANSWER_CHARS} characters`)
    if (nestedDeeperThan(body, MAX_ANSWER_DEPTH)) throw new WebhookError('webhook_invalid_response', `webhook answer nested deeper than ${MAX_ANSWER_DEPTH} levels`)
    let parsed: unknown
    try {
      parsed = JSON.parse(body)
    } catch {
      throw new WebhookError('webhook_invalid_response', 'webhook answered with a body that is not JSON')
    }
    if (typeof parsed !== 'object' || parsed === null || !('message' in parsed) || parsed.message == null) {
      return { outcome: 'accepted' }
    }
    if (!messageCheck.Check(parsed.message)) {
      const first = messageCheck.Errors(parsed.message)[0]
      throw new WebhookError('webhook_invalid_response', `webhook message is invalid: ${first?.instancePath ?? ''} ${first?.message ?? ''}`.trim())
    }
    const missing = unroutableField(parsed.message)
    if (missing !== undefined) throw new WebhookError('webhook_invalid_response', `webhook message has no ${missing}: it would reach nobody`)
    return { outcome: 'message', message: parsed.message }
  }
}
