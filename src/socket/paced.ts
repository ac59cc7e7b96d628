import { Socket } from 'node:net'
import type { WebSocket } from 'ws'
import type { Connection } from './connection.js'
import type { Outbound } from '../protocol/packet.js'
import { CloseCode } from '../protocol/protocol.js'

/** A replay whose client reads nothing for this long (no room for the next frame) is cut as a slow consumer. */
const REPLAY_STALL_MS = 10_000

/**
 * Writes a replay no faster than the client reads it: a recovering client is not a slow consumer for
 * being sent hundreds of frames at once, but one that stops reading is cut all the same (1013). False
 * when the socket went (closed, cut, or its stream broke) before every frame was written.
 */
export async function sendPaced (connection: Connection, frames: Outbound[]): Promise<boolean> {
  const { socket, limits } = connection
  let waitedMs = 0
  for (const frame of frames) {
    while (socket.bufferedAmount > limits.maxBufferedBytes) {
      if (socket.readyState !== socket.OPEN || connection.hold?.discard === true) return false
      if (waitedMs >= REPLAY_STALL_MS) {
        connection.close(CloseCode.slowConsumer, 'slow consumer')
        connection.writer.hooks.dropped(connection, 'slow_consumer')
        return false
      }
      const started = Date.now()
      // A short wait each time: 'drain' fires only once the buffer passed the stream's high-water mark.
      await drained(socket, Math.min(50, REPLAY_STALL_MS - waitedMs))
      waitedMs += Date.now() - started
    }
    if (connection.hold?.discard === true) return false
    if (!connection.writer.send(connection, frame.frame, frame.wire, true)) return false
    // It read something since the last wait: the stall is counted from here.
    waitedMs = 0
  }
  return true
}

/** Resolves when the socket's TCP buffer drained (or it closed, or `ms` passed). */
async function drained (socket: WebSocket, ms: number): Promise<void> {
  const stream = (socket as unknown as { _socket?: unknown })._socket
  if (!(stream instanceof Socket)) return await new Promise((resolve) => setTimeout(resolve, Math.min(ms, 20)))
  await new Promise<void>((resolve) => {
    const done = (): void => {
      clearTimeout(timer)
      stream.off('drain', done)
      stream.off('close', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    stream.once('drain', done)
    stream.once('close', done)
  })
}
