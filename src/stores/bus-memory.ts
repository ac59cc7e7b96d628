import type { Bus, BusState, PacketHandler } from './bus.js'
import { BusUnavailableError } from './store-errors.js'

/** The embedded bus: one process, delivery in publish order, nothing to connect to. */
export class MemoryBus implements Bus {
  readonly kind = 'memory' as const
  readonly #topics = new Set<string>()
  #handler: PacketHandler = () => {}
  #closed = false

  isReady (): boolean {
    return !this.#closed
  }

  async publish (topic: string, packet: Buffer): Promise<void> {
    if (this.#closed) throw new BusUnavailableError('bus is closed')
    if (this.#topics.has(topic)) this.#handler(topic, packet)
  }

  async subscribe (topic: string): Promise<void> {
    this.#topics.add(topic)
  }

  async unsubscribe (topic: string): Promise<void> {
    this.#topics.delete(topic)
  }

  onPacket (handler: PacketHandler): void {
    this.#handler = handler
  }

  onStateChange (_listener: (state: BusState) => void): void {
    // Always ready until closed: nothing to report.
  }

  async close (): Promise<void> {
    this.#closed = true
    this.#topics.clear()
  }
}
