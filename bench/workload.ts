import type { LatencySummary, WorkloadSpec } from './messages.js'

/**
 * What the benchmark sends and who should receive it, computed the same way in every process (driver
 * roles, orchestrator) from the scenario's sizes, so nothing but sizes crosses process boundaries.
 */

export type MessageType = 'standard' | 'bot' | 'system' | 'note'

export type ClientSpec =
  | { kind: 'console', operatorId: number, widgets?: string[], departments?: number[] }
  | { kind: 'customer', chat: number, userId: number }
  | { kind: 'operator', chat: number, operatorId: number }

export interface MessageSpec {
  seq: number
  chat: number
  type: MessageType
  /** For `system`: the role it is meant for. */
  typeRole: 'user' | 'operator'
}

export interface Workload {
  clients: ClientSpec[]
  messages: number
  messageAt: (seq: number) => MessageSpec
}

export const WIDGETS = ['lk', 'site', 'app', 'tg'] as const
export const DEPARTMENTS = 5

export const chatUuid = (chat: number): string => `bench-chat-${chat}`
export const widgetOf = (chat: number): string => WIDGETS[chat % WIDGETS.length] as string
export const departmentOf = (chat: number): number => (chat % DEPARTMENTS) + 1

/** C consoles without sources, every message a standard message of chat 0: pure fan-out. */
export function fanoutWorkload (clients: number, messages: number): Workload {
  return {
    clients: Array.from({ length: clients }, (_, index): ClientSpec => ({ kind: 'console', operatorId: index + 1 })),
    messages,
    messageAt: (seq) => ({ seq, chat: 0, type: 'standard', typeRole: 'operator' })
  }
}

/** Sources of console `index`: a quarter each sees everything, some widgets, some departments, both. */
export function consoleSources (index: number): { widgets?: string[], departments?: number[] } {
  const widget = WIDGETS[index % WIDGETS.length] as string
  const department = (index % DEPARTMENTS) + 1
  switch (index % 4) {
    case 0: return {}
    case 1: return { widgets: [widget, WIDGETS[(index + 1) % WIDGETS.length] as string] }
    case 2: return { departments: [department, (department % DEPARTMENTS) + 1] }
    default: return { widgets: [widget], departments: [department] }
  }
}

const MIX: Array<Pick<MessageSpec, 'type' | 'typeRole'>> = [
  { type: 'standard', typeRole: 'operator' }, { type: 'standard', typeRole: 'user' },
  { type: 'standard', typeRole: 'operator' }, { type: 'standard', typeRole: 'user' },
  { type: 'bot', typeRole: 'operator' }, { type: 'bot', typeRole: 'user' },
  { type: 'system', typeRole: 'user' }, { type: 'system', typeRole: 'operator' },
  { type: 'note', typeRole: 'operator' }, { type: 'note', typeRole: 'operator' }
]

/** The relay's real routing mix: chats with a customer and an operator each, consoles with sources. */
export function mixWorkload (chats: number, consoles: number, messages: number): Workload {
  const clients: ClientSpec[] = []
  for (let chat = 0; chat < chats; chat++) {
    clients.push({ kind: 'customer', chat, userId: 100_000 + chat })
    clients.push({ kind: 'operator', chat, operatorId: 50_000 + chat })
  }
  for (let index = 0; index < consoles; index++) {
    clients.push({ kind: 'console', operatorId: index + 1, ...consoleSources(index) })
  }
  return {
    clients,
    messages,
    messageAt: (seq) => ({ seq, chat: (seq * 7919) % chats, ...(MIX[seq % MIX.length] as Pick<MessageSpec, 'type' | 'typeRole'>) })
  }
}

/** SPEC.md's routing table, restated independently of src/routing.ts: does this client get the message? */
export function receives (client: ClientSpec, message: MessageSpec): boolean {
  const broadcastable = message.type === 'standard' || message.type === 'bot'
  switch (client.kind) {
    case 'customer':
      if (client.chat !== message.chat) return false
      return broadcastable || (message.type === 'system' && message.typeRole === 'user')
    case 'operator':
      if (client.chat !== message.chat) return false
      return broadcastable || message.type === 'note' || (message.type === 'system' && message.typeRole === 'operator')
    case 'console':
      if (!broadcastable) return false
      if (client.widgets !== undefined && !client.widgets.includes(widgetOf(message.chat))) return false
      if (client.departments !== undefined && !client.departments.includes(departmentOf(message.chat))) return false
      return true
  }
}

/** How many messages each client should receive. */
export function expectedCounts (workload: Workload): Int32Array {
  const counts = new Int32Array(workload.clients.length)
  const byChat = new Map<number, number[]>()
  const consoles: number[] = []
  workload.clients.forEach((client, index) => {
    if (client.kind === 'console') consoles.push(index)
    else byChat.set(client.chat, [...(byChat.get(client.chat) ?? []), index])
  })
  const count = (index: number, message: MessageSpec): void => {
    if (receives(workload.clients[index] as ClientSpec, message)) counts[index] = (counts[index] as number) + 1
  }
  for (let seq = 0; seq < workload.messages; seq++) {
    const message = workload.messageAt(seq)
    for (const index of byChat.get(message.chat) ?? []) count(index, message)
    for (const index of consoles) count(index, message)
  }
  return counts
}

const PERSON = '"firstname":"Bench","lastname":"Person","patronymic":null,"avatar":null'

/**
 * The POST /message body (about 600 bytes). The text starts with `seq:NNNNNNNN|` so a sampling client
 * finds the sequence number without parsing JSON; the rest is filler to the target size.
 */
export function messageBody (message: MessageSpec): string {
  const { seq, chat } = message
  const uuid = chatUuid(chat)
  const customer = `{"id":${100_000 + chat},"role":"user",${PERSON}}`
  const operator = `{"id":${50_000 + chat},"role":"operator",${PERSON}}`
  const text = `seq:${String(seq).padStart(8, '0')}|Hello, I would like to know the status of my order and when it ships, thanks.`
  return `{"message":{"id":${seq + 1},"type":"${message.type}","type_role":"${message.typeRole}","status":"new",` +
    `"text":"${text}","send_time":"2026-11-23T10:00:00+03:00","message_index":${seq + 1},` +
    `"chat":{"uuid":"${uuid}","widget":{"source":"${widgetOf(chat)}"},"status":"new","owner_user":${customer},` +
    `"operator_user":${operator},"department":{"id":${departmentOf(chat)}}},` +
    `"user":${message.typeRole === 'user' ? customer : operator},"attachments":[]}}`
}

const SEQ_MARK = Buffer.from('seq:')

/** The sequence number in a delivered frame, or -1. */
export function seqOf (frame: Buffer, start: number, end: number): number {
  const at = frame.indexOf(SEQ_MARK, start)
  if (at < 0 || at + 12 > end) return -1
  let seq = 0
  for (let index = at + 4; index < at + 12; index++) seq = seq * 10 + (frame[index] as number) - 48
  return seq
}

export function workloadOf (spec: WorkloadSpec): Workload {
  return spec.kind === 'fanout'
    ? fanoutWorkload(spec.clients, spec.messages)
    : mixWorkload(spec.chats, spec.consoles, spec.messages)
}

/** Sampling clients are spread over indexes (and so over connection order and client kinds). */
export function isSampler (index: number, every: number): boolean {
  return index % every === Math.floor(index / every) % every
}

export function summarize (samples: number[]): LatencySummary {
  const sorted = Float64Array.from(samples).sort()
  const at = (quantile: number): number => sorted[Math.min(sorted.length - 1, Math.ceil(quantile * sorted.length) - 1)] ?? Number.NaN
  return { count: sorted.length, p50: at(0.5), p99: at(0.99), max: sorted[sorted.length - 1] ?? Number.NaN }
}
