import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { closeAll, join, type TestClient } from './helpers/client.js'
import { startCluster } from './helpers/cluster.js'
import { durableFrames, offsetProblems } from './helpers/recovery.js'
import { startRedis } from './helpers/redis.js'
import { customerToken, operatorToken, startRelay, type Relay } from './helpers/relay.js'

const LOOPS = Number(process.env.RECOVERY_LOOPS ?? 4)
const PER_SENDER = 100

/** message_index values out of arrival order: each a pair that did not increase. */
function indexProblems (client: TestClient): string[] {
  const indexes = client.ofType('message_added').map((frame) => frame.data.message.message_index as number)
  const problems: string[] = []
  for (let at = 1; at < indexes.length; at++) {
    if ((indexes[at] as number) <= (indexes[at - 1] as number)) problems.push(`${indexes[at] as number} after ${indexes[at - 1] as number}`)
  }
  return problems
}

async function sendersAtOnce (t: Test, nodes: [Relay, Relay, Relay]): Promise<void> {
  const [first, second, third] = nodes
  const chat = randomUUID()
  const senders = [
    await join(first.wsUrl, '/chat', { token: customerToken(8001, chat), name: 'customer on node 1' }),
    await join(second.wsUrl, '/chat', { token: operatorToken(8002, { chat }), name: 'operator on node 2' })
  ]
  const receivers = [
    ...senders,
    await join(third.wsUrl, '/chat', { token: customerToken(8003, chat), name: 'another customer on node 3' }),
    await join(third.wsUrl, '/broadcast', { token: operatorToken(8004), name: 'console on node 3' })
  ]
  for (let index = 0; index < PER_SENDER; index++) {
    for (const sender of senders) sender.send({ type: 'send_message', data: { text: `${sender.name} ${index}` } })
  }
  for (const receiver of receivers) {
    await receiver.waitFor(() => receiver.ofType('message_added').length >= 2 * PER_SENDER, 10_000, 'every message')
    t.same(indexProblems(receiver), [], `${receiver.name}: message_index strictly increases in arrival order`)
    t.same(offsetProblems(durableFrames(receiver)), [], `${receiver.name}: offsets strictly increase in arrival order`)
    const ids = receiver.ofType('message_added').map((frame) => frame.data.message.id as number)
    t.equal(new Set(ids).size, 2 * PER_SENDER, `${receiver.name}: ${2 * PER_SENDER} distinct ids`)
  }
  closeAll(...receivers)
}

// Senders share a rate limit of their own: these send 100 at once, which the default burst refuses.
const env = { RATE_LIMIT_BURST: '1000', RATE_LIMIT_PER_SEC: '1000', CLIENT_QUEUE_MAX: '1000' }

t.test('redis, three nodes: two senders on two nodes at once; every receiver sees message_index and offset grow in arrival order', async (t) => {
  const redis = await startRedis(t)
  const nodes = await startCluster(t, redis, 3, env) as [Relay, Relay, Relay]
  for (let loop = 0; loop < LOOPS; loop++) await sendersAtOnce(t, nodes)
})

t.test('embedded bus: two senders at once; every receiver sees message_index and offset grow in arrival order', async (t) => {
  const relay = await startRelay(t, env)
  for (let loop = 0; loop < LOOPS; loop++) await sendersAtOnce(t, [relay, relay, relay])
})
