/**
 * The SDK's public types. Every frame and payload type comes from the relay's TypeBox schemas through a
 * type-only import: nothing of the relay's runtime code ends up in the SDK's JavaScript.
 */
import type { Message, ServerEventType, ServerFrame } from '../../src/protocol/protocol.js'

export type {
  AssignedChat, Chat, Message, MessageStatus, Operator, ServerEventType, ServerFrame, Sources, User
} from '../../src/protocol/protocol.js'

/** The `data` of a relay → client frame. */
export type EventData<T extends ServerEventType> = ServerFrame<T>['data']

/** A stream's epoch and the last offset the client holds in it (SPEC Recovery). */
export interface StreamPosition { epoch: string, offset: number }

/** The part of a WebSocket the SDK uses: the browser's `WebSocket` and Node's `ws` both fit. */
export interface WebSocketLike {
  readonly readyState: number
  onopen: Listener<unknown> | null
  onmessage: Listener<{ data: unknown }> | null
  onclose: Listener<{ code: number, reason: string }> | null
  onerror: Listener<unknown> | null
  send: (data: string) => void
  close: (code?: number, reason?: string) => void
}
/** Method syntax makes the parameter bivariant, so DOM and `ws` event types are both accepted. */
type Listener<E> = { bivariance (event: E): void }['bivariance']

export interface Clock {
  now: () => number
  setTimeout: (callback: () => void, ms: number) => unknown
  clearTimeout: (handle: unknown) => void
}

/** What `online`/`offline` events come from: `globalThis` in browsers. */
export interface NetworkEvents {
  addEventListener: (type: 'online' | 'offline', listener: () => void) => void
  removeEventListener: (type: 'online' | 'offline', listener: () => void) => void
}

export interface BackoffOptions {
  /** First retry ceiling (ms); doubles per failed attempt. Default 500. */
  minMs?: number
  /** Longest wait (ms), also the wait after close 4429. Default 20000. */
  maxMs?: number
  /** A connection that lasted this long (ms) resets the backoff. Default 10000. */
  stableMs?: number
}

export interface CommonOptions {
  /** Relay base URL, e.g. `ws://127.0.0.1:4000` (http(s) is turned into ws(s)); the SDK appends the path. */
  url: string
  /** Called before every connection attempt; after a 4401 it must return a fresh token. */
  getToken: () => string | Promise<string>
  /** A WebSocket constructor: the global one by default (browsers); pass `ws` on Node 20. */
  WebSocket?: new (url: string) => WebSocketLike
  backoff?: BackoffOptions
  /** Ping a connection that received nothing for this long (ms). Default 25000. */
  pingIntervalMs?: number
  /** Reconnect when nothing arrives this long (ms) after a ping. Default 10000. */
  pongTimeoutMs?: number
  /** Give up on an attempt that got no `connected` frame within this long (ms). Default 10000. */
  connectTimeoutMs?: number
  clock?: Clock
  /** In [0, 1), like Math.random (the default). */
  random?: () => number
  /** Source of `online`/`offline` events; defaults to `globalThis` when it has `addEventListener`. */
  network?: NetworkEvents
}

export interface ChatOptions extends CommonOptions {
  /** Ask for the chat's last N durable events on the first connect (`?history=N`). */
  history?: number
}

export type ConsoleOptions = CommonOptions

export type ConnectionState = 'connecting' | 'connected' | 'disconnected'

export interface StateChange {
  state: ConnectionState
  /** The close code and reason, on `disconnected` (4000: the SDK gave up on a silent connection). */
  code?: number
  reason?: string
  /** On `disconnected`: false when the SDK stopped for good (4403, 1009, a second 4401, `close()`). */
  willReconnect?: boolean
}

/** Events the SDK itself emits. */
export interface SdkEvents {
  state: StateChange
  /** A reconnect recovered: every missed durable event follows this, in order. */
  recovered: Record<string, never>
  /** A reconnect could not recover (or had nothing to recover from): refetch state from the backend. */
  resync: Record<string, never>
}

type EventsOf<T extends ServerEventType> = { [K in T]: EventData<K> }

export type ChatServerEvent = 'connected' | 'message_added' | 'message_not_added' | 'message_updated'
| 'message_deleted' | 'typing_updated' | 'user_connected' | 'user_disconnected' | 'error'
export type ConsoleServerEvent = 'connected' | 'message_added' | 'message_updated' | 'message_deleted'
| 'chat_updated' | 'operator_updated' | 'typing_updated' | 'global_updated' | 'chat_notification'
| 'customer_presence' | 'error'

export type ChatEvents = EventsOf<ChatServerEvent> & SdkEvents
export type ConsoleEvents = EventsOf<ConsoleServerEvent> & SdkEvents

export interface RelayClient<Events> {
  readonly state: ConnectionState
  /** Adds a handler; returns the function that removes it. */
  on: <K extends keyof Events & string>(event: K, handler: (data: Events[K]) => void) => () => void
  /** Closes for good: no reconnect; pending sends reject with reason `closed`. */
  close: () => void
}

export interface SendOptions {
  /** Attachment uuids. */
  attachments?: string[]
  /** Reject when the relay has not echoed the message within this long (ms). Default 10000. */
  timeoutMs?: number
  /** Your own id for the message (default: generated); echoed on `message_added` and `message_not_added`. */
  clientMessageId?: string
}

export interface ChatClient extends RelayClient<ChatEvents> {
  /** Resolves with the relay's message (matched by `client_message_id`); rejects with a SendError. */
  sendMessage: (text: string, options?: SendOptions) => Promise<Message>
  markDelivered: (messageId: number) => void
  markRead: (messageId: number) => void
  /** Call on every keystroke with the draft; throttled, and `stopped` after idle or on send. */
  typing: (text: string) => void
}

export type ConsoleClient = RelayClient<ConsoleEvents>
