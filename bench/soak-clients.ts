import WebSocket, { type RawData } from 'ws'
import { expectedKey, frameKey, type ChatDef, type Member, type SoakEvent } from './soak-model.js'

/**
 * The soak's sockets and their bookkeeping. Every tracked socket keeps a balance per key: +1 when an
 * event it must receive was acknowledged (or sent, for client events), -1 when a frame with that key
 * arrived. Stable sockets (open for the whole run) must end at zero; churning ones are checked when they
 * leave, for events acknowledged after they joined and well before they left; slow ones are not checked.
 */

export type Tracking = 'stable' | 'churn' | 'slow'

interface Entry { n: number, at: number }

export class Ledger {
  readonly #entries = new Map<string, Entry>()

  expect (key: string, now: number): void { this.#move(key, 1, now) }

  /** Returns how long the key had been expected (ms), or undefined when it was not. */
  receive (key: string, now: number): number | undefined {
    return this.#move(key, -1, now)
  }

  #move (key: string, delta: number, now: number): number | undefined {
    const entry = this.#entries.get(key)
    if (entry === undefined) {
      this.#entries.set(key, { n: delta, at: now })
      return undefined
    }
    const waited = entry.n > 0 && delta < 0 ? now - entry.at : undefined
    entry.n += delta
    if (entry.n === 0) this.#entries.delete(key)
    return waited
  }

  /** Expected keys not received (registered before `lostBefore`) and received keys never expected (before `extraBefore`). */
  outstanding (lostBefore = Infinity, extraBefore = Infinity): { lost: number, extra: number, sample: string[] } {
    let lost = 0
    let extra = 0
    const sample: string[] = []
    for (const [key, entry] of this.#entries) {
      if (entry.n > 0 && entry.at < lostBefore) lost += entry.n
      else if (entry.n < 0 && entry.at < extraBefore) extra -= entry.n
      else continue
      if (sample.length < 3) sample.push(`${entry.n > 0 ? 'missing' : 'unexpected'} ${key} (since ${new Date(entry.at).toISOString()})`)
    }
    return { lost, extra, sample }
  }
}

export interface Counters {
  deliveries: number
  /** Per frame type, the longest wait from acknowledgement (or send) to arrival of an expected frame, ms. */
  slowest: Record<string, number>
  errorFrames: number
  firstErrorFrame?: string
}

export class SoakSocket {
  readonly ws: WebSocket
  readonly ledger = new Ledger()
  /** When the upgrade began: the relay publishes this socket's user_connected after it. */
  readonly openedAt = Date.now()
  /** When this side began to close (its user_disconnected follows), if it did. */
  closingAt: number | undefined
  connectedAt: number | undefined
  closedAt: number | undefined
  closeCode: number | undefined
  /** Set by whoever owns the socket: called for every counted frame, after bookkeeping. */
  onFrame: ((frame: Record<string, unknown>) => void) | undefined
  onConnected: (() => void) | undefined
  onClosed: ((code: number) => void) | undefined

  constructor (readonly member: Member, readonly tracking: Tracking, readonly node: number, url: string, readonly population: Population) {
    this.ws = new WebSocket(url, { perMessageDeflate: false })
    this.ws.on('message', (raw: RawData) => this.#message(Buffer.isBuffer(raw) ? raw : Buffer.concat(Array.isArray(raw) ? raw : [Buffer.from(raw)])))
    this.ws.on('error', () => {})
    this.ws.once('close', (code: number) => {
      this.closedAt = Date.now()
      this.closeCode = code
      population.remove(this)
      this.onClosed?.(code)
    })
  }

  get open (): boolean {
    return this.connectedAt !== undefined && this.closedAt === undefined
  }

  send (frame: { type: string, data: Record<string, unknown> }): boolean {
    if (this.ws.readyState !== WebSocket.OPEN) return false
    this.ws.send(JSON.stringify(frame))
    return true
  }

  close (): void {
    this.closingAt ??= Date.now()
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close(1000)
  }

  #message (raw: Buffer): void {
    let frame: Record<string, unknown>
    try {
      frame = JSON.parse(raw.toString('utf8')) as Record<string, unknown>
    } catch {
      frame = { type: 'not-json' }
    }
    if (frame.type === 'connected' && this.connectedAt === undefined) {
      this.connectedAt = Date.now()
      this.population.add(this)
      this.onConnected?.()
      return
    }
    const counters = this.population.counters
    if (frame.type === 'error' || frame.type === 'message_not_added') {
      if (this.tracking === 'slow') return
      counters.errorFrames += 1
      counters.firstErrorFrame ??= `${this.describe()}: ${raw.toString('utf8').slice(0, 200)}`
      return
    }
    const key = frameKey(frame)
    if (key === undefined || !this.population.armed) return
    counters.deliveries += 1
    if (this.tracking !== 'slow') {
      const waited = this.ledger.receive(key, Date.now())
      if (waited !== undefined) {
        const type = key.slice(0, key.indexOf(':'))
        if (waited > (counters.slowest[type] ?? 0)) counters.slowest[type] = waited
      }
    }
    this.onFrame?.(frame)
  }

  describe (): string {
    const { member } = this
    return member.endpoint === 'chat'
      ? `${this.tracking} ${member.role} ${member.userId} in ${member.chat.uuid}`
      : `${this.tracking} console of operator ${member.operatorId}`
  }
}

/** The open sockets, by chat room and console, and the events routed to them. */
export class Population {
  armed = false
  readonly counters: Counters = { deliveries: 0, errorFrames: 0, slowest: {} }
  readonly #rooms = new Map<string, Set<SoakSocket>>()
  readonly #consoles = new Set<SoakSocket>()

  add (socket: SoakSocket): void {
    const { member } = socket
    if (member.endpoint === 'broadcast') {
      this.#consoles.add(socket)
      return
    }
    let room = this.#rooms.get(member.chat.uuid)
    if (room === undefined) this.#rooms.set(member.chat.uuid, room = new Set())
    room.add(socket)
  }

  remove (socket: SoakSocket): void {
    const { member } = socket
    if (member.endpoint === 'broadcast') this.#consoles.delete(socket)
    else this.#rooms.get(member.chat.uuid)?.delete(socket)
  }

  /**
   * An event was acknowledged (HTTP 200) or sent (client events, presence): every open tracked socket
   * it must reach expects its key. A churning socket only expects events begun after it joined.
   */
  expect (event: SoakEvent, startedAt: number): void {
    if (!this.armed) return
    const now = Date.now()
    const consider = (socket: SoakSocket): void => {
      if (socket.tracking === 'slow' || !socket.open) return
      if (socket.tracking === 'churn' && (socket.connectedAt as number) > startedAt) return
      const key = expectedKey(event, socket.member)
      if (key !== undefined) socket.ledger.expect(key, now)
    }
    const chat = chatOf(event)
    if (chat !== undefined) for (const socket of this.#rooms.get(chat.uuid) ?? []) consider(socket)
    for (const socket of this.#consoles) consider(socket)
  }
}

function chatOf (event: SoakEvent): ChatDef | undefined {
  return 'chat' in event ? event.chat : undefined
}
