import type { Clock, WebSocketLike } from './types.js'

export const OPEN = 1
export const PING = JSON.stringify({ type: 'ping', data: {} })

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => { clearTimeout(handle as Parameters<typeof clearTimeout>[0]) }
}

/** The socket URL: the base (http(s) turned into ws(s)), the endpoint path, the token, since or history. */
export function socketUrl (base: string, path: string, token: string, recovery: { since?: string, history?: number }): string {
  const url = new URL(base)
  if (url.protocol === 'http:' || url.protocol === 'https:') url.protocol = url.protocol === 'http:' ? 'ws:' : 'wss:'
  url.pathname = url.pathname.replace(/\/+$/, '') + path
  url.searchParams.set('token', token)
  if (recovery.since !== undefined) url.searchParams.set('since', recovery.since)
  else if (recovery.history !== undefined && recovery.history > 0) url.searchParams.set('history', String(recovery.history))
  return url.toString()
}

/** Stops listening to a socket and closes it; its own close event no longer matters. */
export function detach (socket: WebSocketLike, code: number, reason: string): void {
  socket.onmessage = null
  socket.onclose = null
  socket.onopen = null
  // ws throws on an error nobody listens to (closing while connecting makes one).
  socket.onerror = () => {}
  socket.close(code, reason)
}
