import { Agent, request } from 'node:http'
import type { PostPlan } from './messages.js'
import { messageBody, type Workload } from './workload.js'

/**
 * Feeds a server the same way for every system: POST /message with the ~600-byte message JSON on
 * keep-alive connections, either as fast as the server answers (a window of requests in flight) or at a
 * fixed rate. `sentAt[seq]` is when the request was handed to the socket (performance.now()).
 */
export interface PostResult {
  posted: number
  errors: number
  firstError?: string
  firstPostAt: number
  lastPostAt: number
}

export async function postAll (port: number, apiToken: string, workload: Workload, plan: PostPlan, sentAt: Float64Array): Promise<PostResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: plan.kind === 'burst' ? plan.inflight : 64 })
  const result: PostResult = { posted: 0, errors: 0, firstPostAt: Number.NaN, lastPostAt: Number.NaN }

  const post = async (seq: number): Promise<void> => {
    const body = messageBody(workload.messageAt(seq))
    await new Promise<void>((resolve) => {
      const fail = (reason: string): void => {
        result.errors += 1
        result.firstError ??= reason
        resolve()
      }
      const outgoing = request({
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/message',
        agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'api-token': apiToken }
      }, (response) => {
        response.resume()
        response.once('end', () => {
          if (response.statusCode === 200) result.posted += 1
          else fail(`HTTP ${response.statusCode ?? '?'}`)
          resolve()
        })
      })
      outgoing.once('error', (error) => fail(error.message))
      sentAt[seq] = performance.now()
      if (seq === 0) result.firstPostAt = performance.timeOrigin + sentAt[seq]
      outgoing.end(body)
    })
  }

  if (plan.kind === 'burst') {
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < workload.messages) await post(next++)
    }
    await Promise.all(Array.from({ length: plan.inflight }, worker))
  } else {
    const interval = 1000 / plan.perSecond
    const start = performance.now()
    const pending: Array<Promise<void>> = []
    for (let seq = 0; seq < workload.messages; seq++) {
      const wait = start + seq * interval - performance.now()
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
      pending.push(post(seq))
    }
    await Promise.all(pending)
  }
  result.lastPostAt = performance.timeOrigin + performance.now()
  agent.destroy()
  return result
}
