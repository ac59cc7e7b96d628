import { Agent, request } from 'node:http'
import type { Population } from './soak-clients.js'
import {
  chatBody, messageBody, soakText, type ChatDef, type MessageType, type PostedMessage, type Role, type SoakEvent, type World
} from './soak-model.js'

/**
 * The backend's side of the soak: every ingest route that publishes, at a fixed rate over both nodes,
 * each event expected at its receivers once it was answered 200. Big notes to the heavy room feed the
 * slow consumers.
 */

export interface PostStats {
  ok: number
  /** Non-200 answers and transport errors, by status ('error' for a failed request). */
  failed: Record<string, number>
  firstFailure?: string
  /** Ticks where the in-flight bound was reached and the event was not posted. */
  behind: number
  inflight: number
}

export class Poster {
  readonly stats: PostStats = { ok: 0, failed: {}, behind: 0, inflight: 0 }
  readonly #agents: Agent[]

  constructor (readonly ports: number[], readonly apiToken: string, readonly maxInflight = 64) {
    this.#agents = ports.map(() => new Agent({ keepAlive: true, maxSockets: 8 }))
  }

  get full (): boolean {
    return this.stats.inflight >= this.maxInflight
  }

  /** POSTs a JSON body; resolves with the status (0 for a transport error). */
  async post (node: number, path: string, body: unknown): Promise<number> {
    const payload = JSON.stringify(body)
    this.stats.inflight += 1
    const status = await new Promise<number>((resolve) => {
      const outgoing = request({
        host: '127.0.0.1',
        port: this.ports[node],
        method: 'POST',
        path,
        agent: this.#agents[node],
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload), 'api-token': this.apiToken }
      }, (response) => {
        const chunks: Buffer[] = []
        response.on('data', (chunk: Buffer) => chunks.push(chunk))
        response.once('end', () => {
          const code = response.statusCode ?? 0
          if (code !== 200) this.#fail(String(code), `${path}: HTTP ${code} ${Buffer.concat(chunks).toString('utf8').slice(0, 200)}`)
          resolve(code)
        })
      })
      outgoing.setTimeout(30_000, () => outgoing.destroy(new Error('no answer within 30 s')))
      outgoing.once('error', (error) => {
        this.#fail('error', `${path}: ${error.message}`)
        resolve(0)
      })
      outgoing.end(payload)
    })
    this.stats.inflight -= 1
    if (status === 200) this.stats.ok += 1
    return status
  }

  #fail (status: string, detail: string): void {
    this.stats.failed[status] = (this.stats.failed[status] ?? 0) + 1
    this.stats.firstFailure ??= detail
  }

  close (): void {
    for (const agent of this.#agents) agent.destroy()
  }
}

const ADDED: Array<{ type: MessageType, typeRole: Role }> = [
  { type: 'standard', typeRole: 'user' }, { type: 'standard', typeRole: 'operator' }, { type: 'bot', typeRole: 'operator' },
  { type: 'note', typeRole: 'operator' }, { type: 'system', typeRole: 'user' }, { type: 'system', typeRole: 'operator' }
]

/** One round of 20 backend events (the rest of the slots are message_added of the ADDED types in turn). */
const SLOTS: Record<number, 'update' | 'delete' | 'chat_updated' | 'chat_notification' | 'operator_updated' | 'global_updated'> = {
  5: 'update', 9: 'chat_updated', 11: 'chat_notification', 13: 'delete', 15: 'update', 16: 'operator_updated', 18: 'global_updated', 19: 'chat_notification'
}

export class Backend {
  #seq = 0
  #heavySeq = 0
  /** Posted messages waiting to be updated or deleted by the backend (never both, never marked). */
  readonly #toUpdate: PostedMessage[] = []
  readonly #toDelete: PostedMessage[] = []
  readonly #pending = new Set<Promise<void>>()

  constructor (
    readonly world: World,
    readonly poster: Poster,
    readonly population: Population,
    readonly options: { deletes: boolean, heavyBytes: number }
  ) {}

  /** The chat of the seq-th event, spread over all chats. */
  #chat (seq: number): ChatDef {
    return this.world.chats[(seq * 7919) % this.world.chats.length] as ChatDef
  }

  /** Posts the next event of the round, unless too many are in flight. */
  next (): void {
    if (this.poster.full) {
      this.poster.stats.behind += 1
      return
    }
    const seq = this.#seq++
    const node = seq % this.poster.ports.length
    const slot = SLOTS[seq % 20]
    const chat = this.#chat(seq)
    const startedAt = Date.now()
    const send = (path: string, body: unknown, event: SoakEvent, after?: () => void): void => {
      const done = this.poster.post(node, path, body).then((status) => {
        if (status !== 200) return
        this.population.expect(event, startedAt)
        after?.()
      })
      this.#pending.add(done)
      void done.finally(() => this.#pending.delete(done))
    }
    const soakSeq = { soak_seq: seq }
    switch (slot) {
      case 'chat_updated':
        return send('/update/chat', chatBody(chat, soakSeq), { kind: 'chat_updated', chat, n: seq })
      case 'chat_notification':
        return send('/notifications/chat', chatBody(chat, soakSeq), { kind: 'chat_notification', chat, n: seq })
      case 'operator_updated':
        return send('/update/operators', [{ id: chat.operatorId, role: 'operator', status: 'online', ...soakSeq }], { kind: 'operator_updated', n: seq })
      case 'global_updated':
        return send('/global', { queue: seq % 17, ...soakSeq }, { kind: 'global_updated', n: seq })
      case 'update': {
        const target = this.#toUpdate.shift()
        if (target === undefined) break
        const message: PostedMessage = { ...target, text: soakText(`u${seq}`, 300), status: 'read' }
        return send('/message', messageBody(message, 'message_updated'),
          { kind: 'message', event: 'message_updated', chat: target.chat, type: target.type, typeRole: target.typeRole, tag: `u${seq}`, status: 'read' })
      }
      case 'delete': {
        const target = this.options.deletes ? this.#toDelete.shift() : undefined
        if (target === undefined) break
        return send('/message', messageBody(target, 'message_deleted'),
          { kind: 'message_deleted', chat: target.chat, id: target.id, type: target.type, typeRole: target.typeRole })
      }
      case undefined:
        break
    }
    const { type, typeRole } = ADDED[seq % ADDED.length] as (typeof ADDED)[number]
    const message: PostedMessage = { id: 1_000_000 + seq, chat, type, typeRole, text: soakText(`p${seq}`, 200 + (seq % 7) * 60), status: 'new' }
    send('/message', messageBody(message, 'message_added'),
      { kind: 'message', event: 'message_added', chat, type, typeRole, tag: `p${seq}`, status: 'new' },
      () => {
        // Every 4th is left to the room's clients to mark (see Activity); the others to the backend.
        if (seq % 4 === 1) this.#toUpdate.push(message)
        else if (seq % 4 === 2 || seq % 4 === 3) this.#toDelete.push(message)
        if (this.#toUpdate.length > 1000) this.#toUpdate.shift()
        if (this.#toDelete.length > 1000) this.#toDelete.shift()
      })
  }

  /** A big note to the heavy room (only operators read notes): the slow consumers' backlog. */
  heavy (): void {
    if (this.poster.full) {
      this.poster.stats.behind += 1
      return
    }
    const seq = this.#heavySeq++
    const chat = this.world.heavy
    const startedAt = Date.now()
    const tag = `h${seq}`
    const message: PostedMessage = { id: 1_000_000 + seq, chat, type: 'note', typeRole: 'operator', text: soakText(tag, this.options.heavyBytes), status: 'new' }
    const done = this.poster.post(seq % this.poster.ports.length, '/message', messageBody(message, 'message_added')).then((status) => {
      if (status === 200) this.population.expect({ kind: 'message', event: 'message_added', chat, type: 'note', typeRole: 'operator', tag, status: 'new' }, startedAt)
    })
    this.#pending.add(done)
    void done.finally(() => this.#pending.delete(done))
  }

  get posted (): number {
    return this.#seq + this.#heavySeq
  }

  /** Resolves when every request in flight was answered. */
  async settle (): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending])
  }
}

/** Sets up every chat's scope (the relay learns it from what backends post) before traffic starts. */
export async function announceChats (world: World, poster: Poster): Promise<void> {
  const chats = [...world.chats, world.heavy]
  for (let index = 0; index < chats.length; index += 16) {
    await Promise.all(chats.slice(index, index + 16).map(async (chat, offset) => {
      const status = await poster.post((index + offset) % poster.ports.length, '/update/chat', chatBody(chat, { soak_seq: -1 }))
      if (status !== 200) throw new Error(`POST /update/chat for ${chat.uuid} answered ${status}: ${poster.stats.firstFailure ?? ''}`)
    }))
  }
}

/** Whether the relay takes `event: "message_deleted"` (SPEC, issue 14): a 400 means not yet. */
export async function supportsDeletes (world: World, poster: Poster): Promise<boolean> {
  const chat: ChatDef = { ...world.heavy, uuid: 'soak-probe' }
  const probe: PostedMessage = { id: 1, chat, type: 'note', typeRole: 'operator', text: 'probe', status: 'new' }
  const status = await poster.post(0, '/message', messageBody(probe, 'message_deleted'))
  if (status === 400) {
    // Not a failure of the run: the relay does not know the event yet.
    delete poster.stats.failed['400']
    delete poster.stats.firstFailure
  }
  return status === 200
}
