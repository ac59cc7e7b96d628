import { Agent, request } from 'node:http'
import type { PostPlan } from './messages.js'
import { messageBody, type Workload } from './workload.js'

/**
 * Feeds a server the same way for every system: POST /message with the ~600-byte message JSON on
 * keep-alive connections, either as fast as the server answers (a window of requests in flight) or at a
 * fixed rate; or (the relay's batch ingest) the same messages `size` at a time in POST /batch.
 * `sentAt[seq]` is when the request carrying message `seq` was handed to the socket (performance.now()).
 */
export interface PostResult {
  /** Messages the server accepted. */
  posted: number
  /** Messages it did not (a refused request counts every message it carried). */
  errors: number
  firstError?: string
  firstPostAt: number
  lastPostAt: number
}

/** How many events of a POST /batch answer were not published. */
function batchRefusals (text: string, count: number): number {
  try {
    const { results } = JSON.parse(text) as { results?: Array<{ ok?: unknown }> }
    return Array.isArray(results) ? count - results.filter((result) => result.ok === true).length : count
  } catch {
    return count
  }
}

export async function postAll (port: number, apiToken: string, workload: Workload, plan: PostPlan, sentAt: Float64Array): Promise<PostResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: plan.kind === 'rate' ? 64 : plan.inflight })
  const result: PostResult = { posted: 0, errors: 0, firstPostAt: Number.NaN, lastPostAt: Number.NaN }
  const batched = plan.kind === 'batch'

  /** One request carrying messages [first, first + count): POST /message, or POST /batch when batched. */
  const post = async (first: number, count: number): Promise<void> => {
    const bodies = Array.from({ length: count }, (_, offset) => messageBody(workload.messageAt(first + offset)))
    const body = batched ? `{"events":[${bodies.map((message) => `{"route":"/message","body":${message}}`).join(',')}]}` : bodies[0] as string
    await new Promise<void>((resolve) => {
      const fail = (reason: string, messages: number): void => {
        result.errors += messages
        result.firstError ??= reason
        resolve()
      }
      const outgoing = request({
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: batched ? '/batch' : '/message',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'api-token': apiToken }
      }, (response) => {
        const chunks: Buffer[] = []
        response.on('data', (chunk: Buffer) => { if (batched) chunks.push(chunk) })
        response.once('end', () => {
          if (response.statusCode !== 200) return fail(`HTTP ${response.statusCode ?? '?'}`, count)
          const refused = batched ? batchRefusals(Buffer.concat(chunks).toString(), count) : 0
          result.posted += count - refused
          if (refused > 0) return fail(`a batch left ${refused} of ${count} messages unpublished`, refused)
          resolve()
        })
      })
      outgoing.once('error', (error) => fail(error.message, count))
      const now = performance.now()
      for (let seq = first; seq < first + count; seq++) sentAt[seq] = now
      if (first === 0) result.firstPostAt = performance.timeOrigin + now
      outgoing.end(body)
    })
  }

  if (plan.kind === 'rate') {
    const interval = 1000 / plan.perSecond
    const start = performance.now()
    const pending: Array<Promise<void>> = []
    for (let seq = 0; seq < workload.messages; seq++) {
      const wait = start + seq * interval - performance.now()
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
      pending.push(post(seq, 1))
    }
    await Promise.all(pending)
  } else {
    const size = plan.kind === 'batch' ? plan.size : 1
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < workload.messages) {
        const first = next
        next = Math.min(workload.messages, next + size)
        await post(first, next - first)
      }
    }
    await Promise.all(Array.from({ length: plan.inflight }, worker))
  }
  result.lastPostAt = performance.timeOrigin + performance.now()
  agent.destroy()
  return result
}
