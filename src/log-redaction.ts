/**
 * What keeps secrets out of the logs. Socket tokens travel in query strings (`/chat?token=…`) and
 * Api-Token/Authorization in headers: requests are logged without either, and any path with a query
 * string written by a library (Fastify's "Route GET:/x?token=… not found", @fastify/websocket's
 * `{path}`) loses the query before the line is written. Message text is never passed to a logger.
 */

const PATH_WITH_QUERY = /(\/[^\s?#"']*)\?[^\s"']*/g

export function withoutQuery (url: string): string {
  const index = url.indexOf('?')
  return index === -1 ? url : url.slice(0, index)
}

/** Strips the query string of every path in a text. */
export function scrubText (text: string): string {
  return text.includes('?') ? text.replace(PATH_WITH_QUERY, '$1') : text
}

function scrubArgument (value: unknown): unknown {
  if (typeof value === 'string') return scrubText(value)
  if (value === null || typeof value !== 'object' || value instanceof Error) return value
  const record = value as Record<string, unknown>
  if (typeof record.path !== 'string' && typeof record.url !== 'string') return value
  const copy = { ...record }
  if (typeof copy.path === 'string') copy.path = scrubText(copy.path)
  if (typeof copy.url === 'string') copy.url = scrubText(copy.url)
  return copy
}

interface RequestLike { method: string, url: string, socket?: { remoteAddress?: string } }

/** pino options for the relay's logger: no headers, no query strings, anywhere. */
export const logRedaction = {
  serializers: {
    req (request: RequestLike) {
      return { method: request.method, url: withoutQuery(request.url), remoteAddress: request.socket?.remoteAddress }
    }
  },
  hooks: {
    logMethod (this: unknown, args: unknown[], method: (...args: unknown[]) => void): void {
      method.apply(this, args.map(scrubArgument))
    }
  }
}
