import type { Chat, Message } from '../protocol/protocol.js'
import { idString, type ChatScope } from '../protocol/routing.js'

/**
 * What the relay remembers about chats in standalone mode (the message counter lives with the chat's
 * stream, see Bus.append): recent messages (so a mark can re-emit the message with its type intact), each chat's scope (so typing and
 * relay-made messages reach only the consoles whose sources admit the chat) and the typing rate.
 * Bounded: messages per chat and by bytes over all chats, scopes by count.
 */
export interface ChatLog {
  /** Remembers the message (replacing one with its id) and merges its chat's scope as rememberChat does. */
  remember: (message: Message) => Promise<void>
  find: (chatUuid: string, messageId: number) => Promise<Message | undefined>
  /** Forgets a deleted message (its bytes leave the budget): a later find answers undefined. */
  forget: (chatUuid: string, messageId: number) => Promise<void>
  /** Merges the chat's scope field by field: an absent field keeps, null clears, a value sets. */
  rememberChat: (chat: Chat) => Promise<void>
  /** `unknown` until the relay was told a widget or department of the chat (a null counts as told). */
  scopeOf: (chatUuid: string) => Promise<ChatScope>
  /**
   * The chat's scope (as scopeOf) when this user's typing in this chat may be relayed now; null when the
   * user already had `typingPerSecond` typing events in that chat in the current one-second window.
   */
  typing: (chatUuid: string, userKey: string) => Promise<ChatScope | null>
}

/** CHAT_LOG_PER_CHAT, CHAT_LOG_MAX_BYTES and TYPING_PER_SEC of config.ts, for callers that pass none. */
export const chatLogDefaults = { messagesPerChat: 200, maxBytes: 64 * 1024 * 1024, typingPerSecond: 2 } as const

/** What a chat object says about its scope: an absent field keeps, null clears, a string sets. */
export interface ScopeChange {
  widget?: string | null
  department?: string | null
}

export function scopeChange (chat: Chat): ScopeChange {
  const change: ScopeChange = {}
  const { widget, department } = chat
  if (widget === null) change.widget = null
  else if (widget !== undefined && 'source' in widget) {
    if (widget.source === null) change.widget = null
    else if (typeof widget.source === 'string') change.widget = widget.source
  }
  if (department === null) change.department = null
  else if (department !== undefined && 'id' in department) {
    const id: unknown = department.id
    if (id === null) change.department = null
    else if (typeof id === 'string' || typeof id === 'number') change.department = idString(id)
  }
  return change
}

/** A scope the relay was told: present fields filter consoles, absent ones filter nothing. */
export interface RememberedScope {
  widget?: string
  department?: string
}

export function mergeScope (remembered: RememberedScope, change: ScopeChange): RememberedScope {
  const merged: RememberedScope = { ...remembered }
  if (change.widget === null) delete merged.widget
  else if (change.widget !== undefined) merged.widget = change.widget
  if (change.department === null) delete merged.department
  else if (change.department !== undefined) merged.department = change.department
  return merged
}

export function scopeOfRemembered (chatUuid: string, remembered: RememberedScope | undefined): ChatScope {
  if (remembered === undefined) return { uuid: chatUuid, unknown: true }
  return { uuid: chatUuid, ...remembered }
}
