import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { closeAll, connect, join, type TestClient } from './helpers/client.js'
import { eventually } from './helpers/cluster.js'
import { durableFrames, memoryNodes, messageIds, metric, offsetProblems, owedTo, postBurst, redisNodes, type Nodes } from './helpers/recovery.js'
import { customerToken, operatorToken, type Relay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

/** Loops per variant; RECOVERY_LOOPS=50 for a long hunt for races. */
const LOOPS = Number(process.env.RECOVERY_LOOPS ?? 3)
const BURST = 500
// Three Redis nodes and a 500-event burst per loop, 14 variants: more than tap's default 120 s on a loaded machine.
t.setTimeout(300_000)

interface Cut {
  name: string
  env?: Record<string, string>
  /** Cuts the first socket; resolves once it is closed. */
  cut: (client: TestClient, node: Relay) => Promise<void>
  /** The close code the first socket must get (undefined: any, it was terminated by the client). */
  code?: number
  /** Extra message fields (a long text fills a socket that does not read faster than kernel buffers absorb). */
  fields?: Record<string, unknown>
}

const cuts: Cut[] = [
  { name: 'terminated', cut: async (client) => { client.socket.terminate(); await client.closed } },
  // A console reads every lane of its topics: since carries a position per lane stream.
  { name: 'terminated, console topics in 3 lanes', env: { CONSOLE_LANES: '3' }, cut: async (client) => { client.socket.terminate(); await client.closed } },
  {
    name: 'drained (1012)',
    code: 1012,
    cut: async (client, node) => {
      void node.app.sockets.drain(0)
      await client.closed
    }
  },
  {
    name: 'cut as a slow consumer (1013)',
    env: { MAX_BUFFERED_BYTES: '2048', HISTORY_SIZE: '1000', REPLAY_LIMIT: '1000', HISTORY_MAX_BYTES: '536870912' },
    fields: { text: 'x'.repeat(80_000) },
    cut: async (client, node) => {
      // A client that stops reading: the relay's send buffer fills and it cuts the socket (1013). The
      // paused client never reads that close, so the test lets go of it once the relay counted the cut.
      const before = await metric(node, 'relay_slow_consumers_total')
      client.socket.pause()
      await eventually(async () => await metric(node, 'relay_slow_consumers_total') > before, 10_000, 'the slow-consumer cut')
      client.socket.terminate()
      await client.closed
    }
  }
]

for (const [bus, makeNodes] of [['redis', redisNodes], ['memory', memoryNodes]] as const) {
  for (const cut of cuts) {
    for (const who of ['customer', 'console'] as const) {
      // A drained memory node takes no new socket: its reconnect has nowhere to go.
      if (bus === 'memory' && cut.code === 1012) continue
      t.test(`${bus}: a ${who} ${cut.name} mid-burst recovers with since on another node: every owed frame once, in offset order`, async (t) => {
        for (let loop = 0; loop < LOOPS; loop++) await recoverOnce(t, makeNodes, cut, who)
      })
    }
  }
}

async function recoverOnce (t: Test, makeNodes: (t: Test, env?: Record<string, string>) => Promise<Nodes>, cut: Cut, who: 'customer' | 'console'): Promise<void> {
  const [ingest, first, second] = await makeNodes(t, cut.env)
  const chatUuid = randomUUID()
  const chat = chatOf(chatUuid, { widget: { source: 'lk' } })
  const otherChat = chatOf(randomUUID(), { widget: { source: 'elsewhere' } })
  const path = who === 'customer' ? '/chat' : '/broadcast'
  const tokenOf = (): string => who === 'customer' ? customerToken(7001, chatUuid) : operatorToken(7002, { sources: { widgets: ['lk'] } })
  const before = await join(first.wsUrl, path, { token: tokenOf(), name: `${who} before` })
  // A slow consumer is cut once the kernel buffers are full too: early enough for that many bytes to follow.
  const cutAt = 1 + Math.floor(Math.random() * (cut.fields === undefined ? BURST - 2 : 50))
  let cutting: Promise<void> | undefined
  let after: TestClient | undefined
  // What the first socket had received when its since was taken (a paused client may still parse more after).
  let receivedBefore: TestClient['frames'] = []
  let reconnect: (client: TestClient) => void = () => {}
  const reconnected = new Promise<TestClient>((resolve) => { reconnect = resolve })
  const burst = postBurst(ingest, chat, BURST, (acked) => {
    if (acked !== cutAt) return
    cutting = cut.cut(before, first).then(() => {
      receivedBefore = before.frames.slice()
      after = connect(second.wsUrl, path, { token: tokenOf(), query: { since: before.since() }, name: `${who} after` })
      reconnect(after)
    })
  }, cut.fields)
  await burst.done
  // Other widget's traffic: never for this console.
  await ingest.post('/message', { message: messageOf(otherChat) })
  const client = await reconnected
  await cutting
  const owed = burst.acked.filter((id) => owedTo(who, burst.posted.get(id) as Record<string, unknown>))
  const lastOwed = owed[owed.length - 1] as number
  // The last owed message may have reached the first socket already (a cut near the end of the burst).
  await client.next('connected', 10_000)
  if (!messageIds(receivedBefore).includes(lastOwed)) {
    await client.waitFor((frame) => frame.type === 'message_added' && frame.data.message.id === lastOwed, 10_000, `the last owed message (cut at ${cutAt})`)
  }
  const connected = client.frames[0]
  t.equal(connected?.type, 'connected', 'connected is the first frame')
  t.equal(connected?.data.recovered, true, `recovered (cut at ${cutAt})`)
  if (cut.code !== undefined) t.equal((await before.closed).code, cut.code, `the first socket was closed with ${cut.code}`)
  const frames = [...receivedBefore.filter((frame) => frame.offset !== undefined), ...durableFrames(client)]
  t.same(offsetProblems(frames), [], 'offsets strictly increase per stream, over both sockets, with no repeat')
  const received = messageIds(frames)
  t.same(received, owed, `the union is exactly what routing owes the ${who}, in order (${owed.length} frames)`)
  closeAll(before, after as TestClient)
}

