/**
 * How events cross nodes: bytes published to a topic reach every node subscribed to it, in publish
 * order per publisher. Two implementations: in-memory (one node) and Redis (a cluster).
 */
export type PacketHandler = (topic: string, packet: Buffer) => void
export type BusState = 'ready' | 'down'

export interface Bus {
  readonly kind: 'memory' | 'redis'
  /** True while a publish can succeed. */
  isReady: () => boolean
  /** Resolves once the bus accepted the packet; rejects with BusUnavailableError otherwise. */
  publish: (topic: string, packet: Buffer) => Promise<void>
  subscribe: (topic: string) => Promise<void>
  unsubscribe: (topic: string) => Promise<void>
  /** The one receiver of every packet on a subscribed topic (the hub). */
  onPacket: (handler: PacketHandler) => void
  onStateChange: (listener: (state: BusState) => void) => void
  close: () => Promise<void>
}
