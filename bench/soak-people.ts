import type { Socket } from 'node:net'
import { Population, SoakSocket } from './soak-clients.js'
import { consoleDef, soakText, type ChatDef, type Member, type MessageType, type SoakEvent, type World } from './soak-model.js'

/**
 * The soak's clients: stable sockets that talk (messages, typing, marks on what they received), churning
 * customers and consoles that come and go all the time, and slow consumers that stop reading in a room of
 * big notes until the relay cuts them.
 */

export interface PeopleOptions {
  ports: number[]
  sign: (claims: Record<string, unknown>) => string
  /** Mean ms between two messages of one stable room socket, and between two typing bursts. */
  sayEveryMs: number
  typeEveryMs: number
  churnCustomers: number
  churnConsoles: number
  slow: number
  slowMaxMs: number
  /** The relay sends customer_presence to consoles (SPEC, issue 14): churn joins and leaves expect it. */
  customerPresence: boolean
}

export interface PeopleStats {
  messages: number
  typing: number
  marks: number
  churnJoined: number
  churnFailed: number
  /** Events a churning socket should have had (acknowledged after it joined, 5 s before it left) and did not. */
  churnMissed: number
  churnMissedSample: string[]
  slowSpawned: number
  /** Slow consumers whose connection the relay ended while they were not reading. */
  slowCut: number
  slowSurvived: number
  stableClosed: string[]
}

/** How long before its leave an event must have been acknowledged for a churning socket to be sure to have it. */
const CHURN_GRACE_MS = 5000
const CONNECT_TIMEOUT_MS = 30_000
const MESSAGE_TYPES: readonly MessageType[] = ['standard', 'bot', 'system', 'note']

const uniform = (low: number, high: number): number => low + Math.random() * (high - low)
const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)] as T

export class People {
  running = false
  readonly stats: PeopleStats = {
    messages: 0, typing: 0, marks: 0, churnJoined: 0, churnFailed: 0, churnMissed: 0, churnMissedSample: [],
    slowSpawned: 0, slowCut: 0, slowSurvived: 0, stableClosed: []
  }

  readonly stable: SoakSocket[] = []
  readonly #churning = new Set<SoakSocket>()
  readonly #slow = new Set<SoakSocket>()
  /** What a churning socket waits for before it may leave (a customer: its own message back). */
  readonly #mayLeave = new Map<SoakSocket, () => boolean>()
  readonly #timers = new Set<NodeJS.Timeout>()
  #serial = 0
  #tag = 0
  #churnTimer: NodeJS.Timeout | undefined

  constructor (readonly world: World, readonly population: Population, readonly options: PeopleOptions) {}

  #later (ms: number, action: () => void): void {
    const timer = setTimeout(() => {
      this.#timers.delete(timer)
      if (this.running) action()
    }, ms)
    this.#timers.add(timer)
  }

  #open (member: Member, tracking: SoakSocket['tracking'], node: number): SoakSocket {
    const port = this.options.ports[node % this.options.ports.length] as number
    const claims: Record<string, unknown> = member.endpoint === 'chat'
      ? { sub: String(member.userId), role: member.role, chat: member.chat.uuid }
      : { sub: String(member.operatorId), role: 'operator', ...sourcesClaim(member) }
    const path = member.endpoint === 'chat' ? 'chat' : 'broadcast'
    return new SoakSocket(member, tracking, node, `ws://127.0.0.1:${port}/${path}?token=${this.options.sign(claims)}`, this.population)
  }

  /** Opens every stable socket (both nodes), 20 at a time; throws if one does not get `connected`. */
  async connectStable (): Promise<void> {
    const members: Array<{ member: Member, node: number }> = []
    this.world.chats.forEach((chat, index) => {
      members.push({ member: { endpoint: 'chat', chat, role: 'user', userId: chat.customerId }, node: index })
      members.push({ member: { endpoint: 'chat', chat, role: 'operator', userId: chat.operatorId }, node: index + 1 })
      if (chat.supervisorId !== undefined) members.push({ member: { endpoint: 'chat', chat, role: 'operator', userId: chat.supervisorId }, node: index })
    })
    this.world.consoles.forEach((console, index) => members.push({ member: { endpoint: 'broadcast', ...console }, node: index }))
    members.push({ member: { endpoint: 'chat', chat: this.world.heavy, role: 'operator', userId: this.world.heavy.operatorId }, node: 0 })
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < members.length) {
        const { member, node } = members[next++] as (typeof members)[number]
        const socket = this.#open(member, 'stable', node)
        await connected(socket)
        socket.onClosed = (code) => this.stats.stableClosed.push(`${socket.describe()} closed ${code}`)
        this.stable.push(socket)
      }
    }
    await Promise.all(Array.from({ length: 20 }, worker))
  }

  /** Starts talking on the stable sockets, the churn and the slow consumers. */
  start (): void {
    this.running = true
    for (const socket of this.stable) {
      if (socket.member.endpoint !== 'chat' || socket.member.chat === this.world.heavy) continue
      socket.onFrame = (frame) => this.#markLater(socket, frame)
      this.#later(uniform(0, this.options.sayEveryMs), () => this.#say(socket))
      this.#later(uniform(0, this.options.typeEveryMs), () => this.#type(socket))
    }
    this.#churnTimer = setInterval(() => this.#churn(), 250)
    for (let index = 0; index < this.options.slow; index++) this.#spawnSlow()
  }

  /**
   * `startedAt`: a churning socket expects the event only if it joined before then. A presence event may
   * be published before this process reads the `connected` of the socket it is about, so it counts from
   * the upgrade (or the close) of that socket, not from when we saw it.
   */
  #expect (event: SoakEvent, startedAt = Date.now()): void {
    this.population.expect(event, startedAt)
  }

  #say (socket: SoakSocket): void {
    this.#later(uniform(0.5, 1.5) * this.options.sayEveryMs, () => this.#say(socket))
    const member = socket.member
    if (member.endpoint !== 'chat') return
    const tag = `c${this.#tag++}`
    if (!socket.send({ type: 'send_message', data: { text: soakText(tag, Math.round(uniform(40, 400))), client_message_id: tag } })) return
    this.stats.messages += 1
    this.#expect({ kind: 'message', event: 'message_added', chat: member.chat, type: 'standard', typeRole: member.role, tag, status: 'new' })
  }

  /** A typing burst: text now, `stopped` 1.5-3 s later (at most one update_typing a second per user and chat). */
  #type (socket: SoakSocket): void {
    const member = socket.member
    if (member.endpoint !== 'chat') return
    const tag = `y${this.#tag++}`
    const typing = { kind: 'typing', chat: member.chat, role: member.role, userId: member.userId } as const
    if (socket.send({ type: 'update_typing', data: { text: soakText(tag, Math.round(uniform(10, 600))), stopped: false } })) {
      this.stats.typing += 1
      this.#expect({ ...typing, tag, stopped: false })
    }
    this.#later(uniform(1500, 3000), () => {
      if (socket.send({ type: 'update_typing', data: { stopped: true } })) {
        this.stats.typing += 1
        this.#expect({ ...typing, stopped: true })
      }
      this.#later(uniform(0.5, 1.5) * this.options.typeEveryMs, () => this.#type(socket))
    })
  }

  /**
   * Every 4th posted message (`p<seq>`, seq divisible by 4) is marked delivered, then read, by one
   * member of its room that receives it: the customer when it may see it, else the assigned operator.
   */
  #markLater (socket: SoakSocket, frame: Record<string, unknown>): void {
    const member = socket.member
    if (frame.type !== 'message_added' || member.endpoint !== 'chat') return
    const message = (frame.data as { message?: { id?: number, text?: string, type?: string, type_role?: string } } | undefined)?.message
    const tag = message?.text?.split(' ', 1)[0] ?? ''
    if (message === undefined || !/^p\d+$/.test(tag) || Number(tag.slice(1)) % 4 !== 0 || typeof message.id !== 'number') return
    const type = MESSAGE_TYPES.find((known) => known === message.type)
    const typeRole = message.type_role === 'user' || message.type_role === 'operator' ? message.type_role : undefined
    if (type === undefined || typeRole === undefined) return
    const forCustomer = type === 'standard' || type === 'bot' || (type === 'system' && typeRole === 'user')
    const marker = forCustomer ? member.role === 'user' : member.role === 'operator' && member.userId === member.chat.operatorId
    if (!marker) return
    const { id } = message
    const mark = (status: 'delivered' | 'read'): void => {
      if (!socket.send({ type: status === 'read' ? 'mark_message_read' : 'mark_message_delivered', data: { message_id: id } })) return
      this.stats.marks += 1
      this.#expect({ kind: 'message', event: 'message_updated', chat: member.chat, type, typeRole, tag, status })
    }
    // Not at once: the relay remembers a posted message after publishing it.
    this.#later(uniform(1000, 2000), () => {
      mark('delivered')
      this.#later(uniform(500, 1000), () => mark('read'))
    })
  }

  #churn (): void {
    if (!this.running) return
    let customers = 0
    let consoles = 0
    for (const socket of this.#churning) socket.member.endpoint === 'chat' ? customers++ : consoles++
    for (let spawned = 0; spawned < 4 && customers < this.options.churnCustomers; spawned++, customers++) this.#spawnCustomer()
    for (let spawned = 0; spawned < 2 && consoles < this.options.churnConsoles; spawned++, consoles++) this.#spawnConsole()
  }

  #spawnCustomer (): void {
    const serial = this.#serial++
    const chat = pick(this.world.chats)
    const userId = 300_000 + serial
    const socket = this.#open({ endpoint: 'chat', chat, role: 'user', userId }, 'churn', serial)
    let echo: string | undefined
    this.#track(socket, uniform(3000, 30_000), {
      connected: () => {
        this.#expect({ kind: 'presence', event: 'user_connected', chat, role: 'user', userId }, socket.openedAt)
        if (this.options.customerPresence) this.#expect({ kind: 'customer_presence', chat, userId, online: true }, socket.openedAt)
        if (serial % 2 === 1) return
        this.#later(uniform(300, 1500), () => {
          const tag = `k${serial}`
          if (!socket.send({ type: 'send_message', data: { text: soakText(tag, 120), client_message_id: tag } })) return
          echo = tag
          this.stats.messages += 1
          this.#expect({ kind: 'message', event: 'message_added', chat, type: 'standard', typeRole: 'user', tag, status: 'new' })
        })
      },
      closed: () => {
        const closingAt = socket.closingAt ?? Date.now()
        this.#expect({ kind: 'presence', event: 'user_disconnected', chat, role: 'user', userId }, closingAt)
        if (this.options.customerPresence) this.#expect({ kind: 'customer_presence', chat, userId, online: false }, closingAt)
      },
      // A customer leaves only after its own message came back, so that the others in the room surely have it.
      leaveWhen: () => echo === undefined
    })
    socket.onFrame = (frame) => {
      const text = (frame.data as { message?: { text?: string } } | undefined)?.message?.text
      if (frame.type === 'message_added' && echo !== undefined && text?.startsWith(`${echo} `) === true) echo = undefined
    }
  }

  #spawnConsole (): void {
    const serial = this.#serial++
    this.#track(this.#open({ endpoint: 'broadcast', ...consoleDef(5000 + serial, serial) }, 'churn', serial), uniform(5000, 60_000), {})
  }

  /** A churning socket: leaves after `lifetimeMs` (once `leaveWhen` allows, at most 20 s later), checked as it goes. */
  #track (socket: SoakSocket, lifetimeMs: number, hooks: { connected?: () => void, closed?: () => void, leaveWhen?: () => boolean }): void {
    this.#churning.add(socket)
    if (hooks.leaveWhen !== undefined) this.#mayLeave.set(socket, hooks.leaveWhen)
    socket.onConnected = () => {
      this.stats.churnJoined += 1
      hooks.connected?.()
    }
    socket.onClosed = () => {
      this.#churning.delete(socket)
      this.#mayLeave.delete(socket)
      if (socket.connectedAt !== undefined) hooks.closed?.()
      else if (this.running) this.stats.churnFailed += 1
    }
    const deadline = Date.now() + lifetimeMs + 20_000
    const leave = (): void => {
      if (socket.closedAt !== undefined) return
      // Not yet connected: the connect timeout ends it if it never is.
      if (socket.connectedAt === undefined || (hooks.leaveWhen?.() === false && Date.now() < deadline)) return this.#later(250, leave)
      this.#leave(socket)
    }
    setTimeout(() => { if (socket.connectedAt === undefined) socket.ws.terminate() }, CONNECT_TIMEOUT_MS).unref()
    this.#later(lifetimeMs, leave)
  }

  #leave (socket: SoakSocket): void {
    const { lost, sample } = socket.ledger.outstanding(Date.now() - CHURN_GRACE_MS, -Infinity)
    this.stats.churnMissed += lost
    if (lost > 0 && this.stats.churnMissedSample.length < 5) {
      const joined = socket.connectedAt ?? 0
      this.stats.churnMissedSample.push(`${socket.describe()} (joined ${new Date(joined).toISOString()}, left ${((Date.now() - joined) / 1000).toFixed(1)} s later): ${sample.join(', ')}`)
    }
    socket.close()
  }

  /** A slow consumer: an operator in the heavy room that stops reading (and answering pings) after `connected`. */
  #spawnSlow (): void {
    const serial = this.#serial++
    const chat: ChatDef = this.world.heavy
    const userId = 9000 + serial
    const socket = this.#open({ endpoint: 'chat', chat, role: 'operator', userId }, 'slow', serial)
    this.#slow.add(socket)
    this.stats.slowSpawned += 1
    let paused = false
    let pinger: NodeJS.Timeout | undefined
    socket.onConnected = () => {
      this.#expect({ kind: 'presence', event: 'user_connected', chat, role: 'operator', userId }, socket.openedAt)
      paused = true
      ;(socket.ws as unknown as { _socket: Socket })._socket.pause()
      // Writing to a connection the relay ended fails: that is how a client that does not read learns it.
      pinger = setInterval(() => { try { socket.ws.ping() } catch {} }, 2000)
      this.#later(this.options.slowMaxMs, () => {
        if (socket.closedAt !== undefined) return
        this.stats.slowSurvived += 1
        paused = false
        socket.ws.terminate()
      })
    }
    socket.onClosed = () => {
      clearInterval(pinger)
      this.#slow.delete(socket)
      if (paused && this.running) this.stats.slowCut += 1
      if (socket.connectedAt !== undefined) this.#expect({ kind: 'presence', event: 'user_disconnected', chat, role: 'operator', userId })
      if (this.running) this.#later(1000, () => this.#spawnSlow())
    }
  }

  /** Stops all activity; churning sockets leave (checked), slow ones are cut; resolves when they are closed. */
  async stop (): Promise<void> {
    this.running = false
    clearInterval(this.#churnTimer)
    for (const timer of this.#timers) clearTimeout(timer)
    this.#timers.clear()
    // Sockets still connecting may already be announced: let them finish, so that their leave is announced as
    // expected. A message still in the relay's queue for a socket that closes is dropped, never published:
    // wait for the echoes.
    const settled = Date.now() + 20_000
    const waiting = (): boolean => [...this.#churning, ...this.#slow].some((socket) => socket.closedAt === undefined &&
      (socket.connectedAt === undefined || this.#mayLeave.get(socket)?.() === false))
    while (waiting() && Date.now() < settled) await new Promise((resolve) => setTimeout(resolve, 100))
    for (const socket of this.#churning) {
      if (socket.connectedAt === undefined) socket.ws.terminate()
      else this.#leave(socket)
    }
    for (const socket of this.#slow) socket.ws.terminate()
    const deadline = Date.now() + 15_000
    while ((this.#churning.size > 0 || this.#slow.size > 0) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100))
    for (const socket of [...this.#churning, ...this.#slow]) socket.ws.terminate()
  }

  closeStable (): void {
    for (const socket of this.stable) {
      socket.onClosed = undefined
      socket.ws.terminate()
    }
  }
}

function sourcesClaim (console: { widgets?: string[], departments?: number[] }): Record<string, unknown> {
  if (console.widgets === undefined && console.departments === undefined) return {}
  return { sources: { ...(console.widgets === undefined ? {} : { widgets: console.widgets }), ...(console.departments === undefined ? {} : { departments: console.departments }) } }
}

async function connected (socket: SoakSocket): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${socket.describe()}: no connected within ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS)
    socket.onConnected = () => { clearTimeout(timer); resolve() }
    socket.onClosed = (code) => { clearTimeout(timer); reject(new Error(`${socket.describe()}: closed ${code} before connected`)) }
  })
}
