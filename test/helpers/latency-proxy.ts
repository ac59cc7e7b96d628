import { createServer, connect, type Socket } from 'node:net'
import type { Tap } from './relay.js'

export interface LatencyProxy {
  /** redis://127.0.0.1:PORT of the proxy */
  url: string
  /** Resolves when the proxy next hands bytes from a client to the server (after their delay); fails after `ms`. */
  forwarded: (ms?: number) => Promise<void>
}

/**
 * A TCP proxy in front of a server that delays every chunk, each way, by `delayMs` (in order): a node
 * whose Redis round trips are slow, so races a fast node would win by luck are decided by the code.
 */
export async function startLatencyProxy (t: Tap, targetPort: number, delayMs: number): Promise<LatencyProxy> {
  const sockets = new Set<Socket>()
  let waiters: Array<() => void> = []
  const relay = (from: Socket, to: Socket, upstream: boolean): void => {
    from.on('data', (chunk: Buffer) => {
      setTimeout(() => {
        if (to.destroyed) return
        to.write(chunk)
        if (!upstream) return
        const resolved = waiters
        waiters = []
        for (const resolve of resolved) resolve()
      }, delayMs)
    })
    from.on('close', () => setTimeout(() => to.destroy(), delayMs))
    from.on('error', () => from.destroy())
  }
  const server = createServer((client) => {
    const target = connect(targetPort, '127.0.0.1')
    sockets.add(client).add(target)
    client.on('close', () => sockets.delete(client))
    target.on('close', () => sockets.delete(target))
    relay(client, target, true)
    relay(target, client, false)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const socket of sockets) socket.destroy()
    await new Promise((resolve) => server.close(resolve))
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('proxy has no port')
  return {
    url: `redis://127.0.0.1:${address.port}`,
    forwarded: async (ms = 3000) => await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`proxy forwarded nothing within ${ms} ms`)), ms)
      waiters.push(() => {
        clearTimeout(timer)
        resolve()
      })
    })
  }
}
