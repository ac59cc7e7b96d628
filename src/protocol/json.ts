/**
 * Bounds on JSON a client sends. V8 parses any nesting, but what is built from it later (serializing it
 * again, validating it, walking it) recurses, and a few kilobytes of `[[[[…` overflow the stack there.
 * The text is measured before it is parsed, without recursion, so nothing deep is ever built.
 */

const OPEN_OBJECT = 0x7b
const OPEN_ARRAY = 0x5b
const CLOSE_OBJECT = 0x7d
const CLOSE_ARRAY = 0x5d
const QUOTE = 0x22
const BACKSLASH = 0x5c

/** True when `text` (JSON or not) opens more than `maxDepth` objects/arrays inside one another. */
export function nestedDeeperThan (text: string, maxDepth: number): boolean {
  let depth = 0
  let inString = false
  for (let index = 0; index < text.length; index++) {
    const char = text.charCodeAt(index)
    if (inString) {
      if (char === BACKSLASH) index += 1
      else if (char === QUOTE) inString = false
      continue
    }
    if (char === QUOTE) {
      inString = true
    } else if (char === OPEN_OBJECT || char === OPEN_ARRAY) {
      depth += 1
      if (depth > maxDepth) return true
    } else if (char === CLOSE_OBJECT || char === CLOSE_ARRAY) {
      depth -= 1
    }
  }
  return false
}

/** A client value shown in a message: at most `max` characters of it, never serialized whole. */
export function preview (value: unknown, max = 40): string {
  if (typeof value === 'string') return JSON.stringify(value.length > max ? `${value.slice(0, max)}…` : value)
  if (value === null || value === undefined) return String(value)
  if (Array.isArray(value)) return 'an array'
  return typeof value === 'object' ? 'an object' : String(value).slice(0, max)
}

/** `text` cut to at most `maxBytes` of UTF-8 (a WebSocket close reason is at most 123 bytes). */
export function truncateUtf8 (text: string, maxBytes: number): string {
  if (Buffer.byteLength(text) <= maxBytes) return text
  let cut = Buffer.from(text).subarray(0, maxBytes).toString('utf8')
  // A multi-byte character cut in half decodes to U+FFFD (3 bytes): drop it.
  while (Buffer.byteLength(cut) > maxBytes || cut.endsWith('\ufffd')) cut = cut.slice(0, -1)
  return cut
}
