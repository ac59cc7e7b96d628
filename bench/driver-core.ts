import { createSigner } from 'fast-jwt'
import type { DrainAnswer, DriverAnswer, DriverInit, DriverRequest } from './messages.js'
import { postAll } from './poster.js'
import { clientRooms } from './rooms.js'
import { BenchClient, type WireProtocol } from './ws-client.js'
import { chatUuid, expectedCounts, isSampler, seqOf, summarize, workloadOf, type ClientSpec, type Workload } from './workload.js'

/**
 * The load driver, run in one of two roles (as a child process: bench/driver.ts). The prober posts and owns the sampling
 * clients, which read each frame's sequence number to time POST → receive; the counter owns every other
 * client and only counts frames (no parse, no copy), so the driver stays cheaper than the server.
 * Every wait is bounded; the process exits when the orchestrator says so or disconnects.
 */

function clientPath (system: WireProtocol, client: ClientSpec, sign: (claims: Record<string, unknown>) => string): string {
  if (system === 'ws') return `/ws?rooms=${encodeURIComponent(clientRooms(client).join(','))}`
  if (system === 'socketio') return `/socket.io/?EIO=4&transport=websocket&rooms=${encodeURIComponent(clientRooms(client).join(','))}`
  if (client.kind === 'console') {
    const { widgets, departments } = client
    const sources = widgets === undefined && departments === undefined ? {} : { sources: { widgets, departments } }
    return `/broadcast?token=${sign({ sub: String(client.operatorId), role: 'operator', ...sources })}`
  }
  const sub = String(client.kind === 'customer' ? client.userId : client.operatorId)
  const role = client.kind === 'customer' ? 'user' : 'operator'
  return `/chat?token=${sign({ sub, role, chat: chatUuid(client.chat) })}`
}

export class Driver {
  readonly workload: Workload
  readonly expected: Int32Array
  readonly received: Int32Array
  readonly clients = new Map<number, BenchClient>()
  readonly sentAt: Float64Array
  readonly latencies: number[] = []
  readonly closes: Record<string, number> = {}
  readonly sign: (claims: Record<string, unknown>) => string
  lastDeliveryAt = Number.NaN
  armed = false
  cpuAtArm = process.cpuUsage()

  constructor (readonly init: DriverInit) {
    this.workload = workloadOf(init.workload)
    this.expected = expectedCounts(this.workload)
    this.received = new Int32Array(this.workload.clients.length)
    this.sentAt = new Float64Array(this.workload.messages)
    this.sign = createSigner({ key: init.jwtSecret, algorithm: 'HS256', expiresIn: 3_600_000 })
  }

  owns (index: number): boolean {
    if (isSampler(index, this.init.sampleEvery) !== (this.init.role === 'prober')) return false
    const shard = this.init.shard
    return shard === undefined || index % shard.count === shard.index
  }

  /** Opens the owned clients in [from, to), a bounded number at a time; resolves when all settled. */
  async connect (from: number, to: number): Promise<Extract<DriverAnswer, { op: 'connected' }>> {
    const indexes: number[] = []
    for (let index = from; index < Math.min(to, this.workload.clients.length); index++) if (this.owns(index)) indexes.push(index)
    let failed = 0
    let firstError: string | undefined
    let next = 0
    const open = async (): Promise<void> => {
      while (next < indexes.length) {
        const index = indexes[next++] as number
        const error = await this.open(index)
        if (error !== undefined) {
          failed += 1
          firstError ??= error
        }
      }
    }
    await Promise.all(Array.from({ length: this.init.connectConcurrency }, open))
    return { op: 'connected', clients: indexes.length, failed, ...(firstError === undefined ? {} : { firstError }) }
  }

  async open (index: number): Promise<string | undefined> {
    const { system, ports, sourceAddresses } = this.init
    const spec = this.workload.clients[index] as ClientSpec
    const port = ports[index % ports.length] as number
    const localAddress = sourceAddresses?.[index % sourceAddresses.length]
    const sampler = this.init.role === 'prober'
    return await new Promise((resolve) => {
      const timer = setTimeout(() => {
        client.destroy()
        resolve('not subscribed within 30 s')
      }, 30_000)
      const client: BenchClient = new BenchClient({ port, localAddress }, clientPath(system, spec, this.sign), system, {
        ready: () => {
          clearTimeout(timer)
          this.clients.set(index, client)
          resolve(undefined)
        },
        delivery: (frame, start, end) => {
          if (!this.armed) return
          this.received[index] = (this.received[index] as number) + 1
          const now = performance.now()
          this.lastDeliveryAt = now
          if (!sampler) return
          const seq = seqOf(frame, start, end)
          if (seq >= 0 && seq < this.sentAt.length) this.latencies.push(now - (this.sentAt[seq] as number))
        },
        closed: (code, reason) => {
          clearTimeout(timer)
          this.clients.delete(index)
          if (this.armed) this.closes[code] = (this.closes[code] ?? 0) + 1
          resolve(`closed ${code} ${reason}`)
        }
      })
    })
  }

  arm (): void {
    this.received.fill(0)
    this.latencies.length = 0
    this.lastDeliveryAt = Number.NaN
    this.armed = true
    this.cpuAtArm = process.cpuUsage()
  }

  /** Waits until every owned client has what it should, or nothing arrived for `idleMs`. */
  async drain (idleMs: number, deadlineMs: number): Promise<DrainAnswer> {
    const started = performance.now()
    while (performance.now() - started < deadlineMs) {
      if (this.complete()) break
      const lastActivity = Number.isNaN(this.lastDeliveryAt) ? started : Math.max(started, this.lastDeliveryAt)
      if (performance.now() - lastActivity > idleMs) break
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    return this.result()
  }

  close (): void {
    for (const client of this.clients.values()) client.destroy()
    this.clients.clear()
  }

  complete (): boolean {
    for (let index = 0; index < this.received.length; index++) {
      if (this.owns(index) && (this.received[index] as number) < (this.expected[index] as number)) return false
    }
    return true
  }

  result (): DrainAnswer {
    let clients = 0
    let expected = 0
    let received = 0
    let lost = 0
    let extra = 0
    for (let index = 0; index < this.received.length; index++) {
      if (!this.owns(index)) continue
      const want = this.expected[index] as number
      const got = this.received[index] as number
      clients += 1
      expected += want
      received += got
      if (got < want) lost += want - got
      else extra += got - want
    }
    const cpu = process.cpuUsage(this.cpuAtArm)
    return {
      op: 'drained',
      clients,
      expected,
      received,
      lost,
      extra,
      lastDeliveryAt: performance.timeOrigin + this.lastDeliveryAt,
      latency: summarize(this.latencies),
      closes: this.closes,
      cpuSeconds: (cpu.user + cpu.system) / 1e6
    }
  }
}

/** One request of the orchestrator; `driver` holds the state between requests. */
export async function handle (state: { driver?: Driver }, request: DriverRequest): Promise<DriverAnswer> {
  if (request.op === 'init') {
    state.driver = new Driver(request.init)
    return { op: 'inited' }
  }
  const driver = state.driver
  if (driver === undefined) throw new Error(`${request.op} before init`)
  switch (request.op) {
    case 'connect':
      return await driver.connect(request.from, request.to)
    case 'arm':
      driver.arm()
      return { op: 'armed' }
    case 'post': {
      const posted = await postAll(driver.init.ports[0] as number, driver.init.apiToken, driver.workload, request.plan, driver.sentAt)
      return { op: 'posted', ...posted }
    }
    case 'drain':
      return await driver.drain(request.idleMs, request.deadlineMs)
    case 'exit':
      driver.close()
      return { op: 'ready' }
  }
}
