type Handler = (data: unknown) => void

/** Typed on the way in (`on`); the connection emits frames by their wire name. */
export class Emitter<Events> {
  readonly #handlers = new Map<string, Set<Handler>>()

  on<K extends keyof Events & string> (event: K, handler: (data: Events[K]) => void): () => void {
    let handlers = this.#handlers.get(event)
    if (handlers === undefined) this.#handlers.set(event, handlers = new Set())
    // Only emit() calls it, with the data of this event's name.
    const stored = handler as Handler
    handlers.add(stored)
    return () => { handlers.delete(stored) }
  }

  emit (event: string, data: unknown): void {
    const handlers = this.#handlers.get(event)
    if (handlers === undefined) return
    for (const handler of [...handlers]) {
      try {
        handler(data)
      } catch (error) {
        // An application bug must not break the connection, and must not vanish either.
        report(error)
      }
    }
  }
}

function report (error: unknown): void {
  const reportError = (globalThis as { reportError?: (error: unknown) => void }).reportError
  if (typeof reportError === 'function') reportError(error)
  else console.error(error)
}
