import { Agent, request } from 'node:http'
import { createSigner } from 'fast-jwt'
import { clientRooms } from './rooms.js'
import { RelayStormClient, SocketIoStormClient, type StormClient } from './storm-clients.js'
import { tally, type Acked, type StormAnswer, type StormInit, type StormRequest } from './storm-tally.js'
import { chatUuid, messageBody } from './workload.js'

/**
 * The driver of the reconnect storm (f), a child process of the benchmark: it holds every client and
 * posts the messages, so that both the acknowledgements and the arrivals are timed on one clock. Client
 * i is customer 1,000,000 + i of chat i mod chats; message seq is a standard message of chat seq mod
 * chats (so every customer socket of that chat is owed it), POSTed to node B at the fixed rate.
 */

const wallClock = (): number => performance.timeOrigin + performance.now()

class StormDriver {
  readonly clients: StormClient[] = []
  readonly acked: Acked[] = []
  readonly agent = new Agent({ keepAlive: true, maxSockets: 64 })
  postErrors = 0
  firstPostError: string | undefined
  posting: Promise<void> | undefined
  stopPosting = false

  constructor (readonly init: StormInit) {}

  async connect (): Promise<Extract<StormAnswer, { op: 'connected' }>> {
    const { clients, chats, system, portA, portB, jwtSecret, connectConcurrency } = this.init
    const sign = createSigner({ key: jwtSecret, algorithm: 'HS256', expiresIn: 3_600_000 })
    let next = 0
    let failed = 0
    let firstError: string | undefined
    const open = async (): Promise<void> => {
      while (next < clients) {
        const index = next++
        const chat = index % chats
        const userId = 1_000_000 + index
        const client = system === 'relay'
          ? new RelayStormClient(chat, sign({ sub: String(userId), role: 'user', chat: chatUuid(chat) }), portA, portB)
          : new SocketIoStormClient(chat, clientRooms({ kind: 'customer', chat, userId }).join(','), portA, portB)
        this.clients.push(client)
        const error = await Promise.race([client.opened, delay(30_000).then(() => 'not connected within 30 s')])
        if (error === undefined) continue
        failed += 1
        firstError ??= error
      }
    }
    await Promise.all(Array.from({ length: connectConcurrency }, open))
    return { op: 'connected', clients, failed, ...(firstError === undefined ? {} : { firstError }) }
  }

  /** POSTs message seq at start + seq / rate until told to stop; each 200 is an acknowledgement. */
  startPosting (): void {
    const interval = 1000 / this.init.rate
    const start = performance.now()
    const pending: Array<Promise<void>> = []
    this.posting = (async () => {
      for (let seq = 0; !this.stopPosting; seq++) {
        const wait = start + seq * interval - performance.now()
        if (wait > 0) await delay(wait)
        if (this.stopPosting) break
        pending.push(this.post(seq))
      }
      await Promise.all(pending)
    })()
  }

  async post (seq: number): Promise<void> {
    const chat = seq % this.init.chats
    const body = messageBody({ seq, chat, type: 'standard', typeRole: 'operator' })
    const outcome = await new Promise<string | undefined>((resolve) => {
      const outgoing = request({
        host: '127.0.0.1',
        port: this.init.portB,
        method: 'POST',
        path: '/message',
        agent: this.agent,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'api-token': this.init.apiToken }
      }, (response) => {
        response.resume()
        response.once('end', () => resolve(response.statusCode === 200 ? undefined : `HTTP ${response.statusCode ?? '?'}`))
      })
      outgoing.once('error', (error) => resolve(error.message))
      outgoing.end(body)
    })
    if (outcome === undefined) {
      // messageBody gives message seq the id seq + 1.
      this.acked.push({ id: seq + 1, chat, at: wallClock() })
      return
    }
    this.postErrors += 1
    this.firstPostError ??= outcome
  }

  async finishPosting (): Promise<Extract<StormAnswer, { op: 'posted' }>> {
    this.stopPosting = true
    await this.posting
    this.agent.destroy()
    return { op: 'posted', posted: this.acked.length, errors: this.postErrors, ...(this.firstPostError === undefined ? {} : { firstError: this.firstPostError }) }
  }

  status (): Extract<StormAnswer, { op: 'status' }> {
    let moved = 0
    let reconnected = 0
    for (const { ledger } of this.clients) {
      if (!Number.isNaN(ledger.closedAt)) moved += 1
      if (!Number.isNaN(ledger.reconnectedAt)) reconnected += 1
    }
    return { op: 'status', moved, reconnected }
  }

  /** Waits until every client holds every message of its chat, or nothing arrived for `idleMs`. */
  async settle (idleMs: number, deadlineMs: number): Promise<StormAnswer> {
    const started = wallClock()
    for (;;) {
      const figures = tally(this.clients.map((client) => client.ledger), this.acked)
      const last = this.clients.reduce((latest, { ledger }) => Number.isNaN(ledger.lastDeliveryAt) ? latest : Math.max(latest, ledger.lastDeliveryAt), started)
      const now = wallClock()
      if (figures.lost === 0 || now - last > idleMs || now - started > deadlineMs) {
        const cpu = process.cpuUsage()
        return { op: 'settled', figures: { ...figures, driverCpuSeconds: (cpu.user + cpu.system) / 1e6 } }
      }
      await delay(100)
    }
  }

  close (): void {
    for (const client of this.clients) client.stop()
  }
}

async function delay (ms: number): Promise<void> {
  await new Promise((resolve) => setTimeout(resolve, ms))
}

const state: { driver?: StormDriver } = {}

async function handle (request: StormRequest): Promise<StormAnswer> {
  if (request.op === 'init') {
    state.driver = new StormDriver(request.init)
    return { op: 'inited' }
  }
  const driver = state.driver
  if (driver === undefined) throw new Error(`${request.op} before init`)
  switch (request.op) {
    case 'connect':
      return await driver.connect()
    case 'post-start':
      driver.startPosting()
      return { op: 'posting' }
    case 'status':
      return driver.status()
    case 'post-stop':
      return await driver.finishPosting()
    case 'settle':
      return await driver.settle(request.idleMs, request.deadlineMs)
    case 'exit':
      driver.close()
      return { op: 'ready' }
  }
}

process.on('message', (request: StormRequest) => {
  handle(request).then((answer) => {
    process.send?.(answer)
    if (request.op === 'exit') setImmediate(() => process.exit(0))
  }, (error: unknown) => {
    process.send?.({ op: 'error', message: error instanceof Error ? error.stack ?? error.message : String(error) })
  })
})
process.on('disconnect', () => process.exit(0))
process.send?.({ op: 'ready' })
