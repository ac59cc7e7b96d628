import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { closeAll, join, type Frame, type TestClient } from './helpers/client.js'
import { startCluster } from './helpers/cluster.js'
import { startRedis } from './helpers/redis.js'
import { customerToken, operatorToken, startRelay, type Relay } from './helpers/relay.js'

/**
 * Standalone mode (no webhook) remembers the messages it routes, so a mark can re-emit them; a message
 * the backend deleted is forgotten: marking it afterwards is `message_not_found`, on every node.
 */
interface Setup {
  /** Where the backend posts. */
  ingest: Relay
  /** Where the customer's and the operator's sockets connect. */
  customerUrl: string
  operatorUrl: string
}

async function sent (client: TestClient, text: string): Promise<Frame['data']> {
  client.send({ type: 'send_message', data: { text } })
  const frame = await client.waitFor((f) => f.type === 'message_added' && f.data.message.text === text, 3000, `message_added "${text}"`)
  return frame.data.message
}

async function markAnswer (client: TestClient, messageId: number): Promise<Frame> {
  const before = client.frames.length
  client.send({ type: 'mark_message_read', data: { message_id: messageId } })
  return await client.waitFor((f) => client.frames.indexOf(f) >= before &&
    (f.type === 'error' || (f.type === 'message_updated' && f.data.message.id === messageId)), 3000, `the answer to marking ${messageId}`)
}

function deletedMessageSuite (t: Test, name: string, setup: (t: Test) => Promise<Setup>): void {
  t.test(`${name}: a message the backend deleted can no longer be marked (message_not_found); one it did not delete still can`, async (t) => {
    const { ingest, customerUrl, operatorUrl } = await setup(t)
    const chat = randomUUID()
    const customer = await join(customerUrl, '/chat', { token: customerToken(41, chat), name: 'customer' })
    const operator = await join(operatorUrl, '/chat', { token: operatorToken(42, { chat }), name: 'operator' })
    t.teardown(() => closeAll(customer, operator))
    const doomed = await sent(customer, 'to be deleted')
    const kept = await sent(customer, 'to be kept')
    await operator.waitFor((f) => f.type === 'message_added' && f.data.message.id === kept.id, 3000, 'the second message')

    const answer = await ingest.post('/message', { message: doomed, event: 'message_deleted' })
    t.equal(answer.statusCode, 200)
    for (const client of [customer, operator]) {
      const frame = await client.waitFor((f) => f.type === 'message_deleted', 3000, 'message_deleted')
      t.strictSame(frame.data, { message: { id: doomed.id, chat: { uuid: chat } } }, `${client.name} learns of the deletion`)
    }
    for (const client of [customer, operator]) {
      const refused = await markAnswer(client, doomed.id as number)
      t.equal(refused.type, 'error', `${client.name} cannot mark the deleted message`)
      t.equal(refused.data.code, 'message_not_found')
    }
    const marked = await markAnswer(customer, kept.id as number)
    t.equal(marked.type, 'message_updated', 'the message that was not deleted is still marked')
    t.equal(marked.data.message.status, 'read')
    t.equal(customer.ofType('message_updated').filter((f) => f.data.message.id === doomed.id).length, 0, 'no update of the deleted message ever went out')
  })
}

deletedMessageSuite(t, 'one node, embedded bus', async (t) => {
  const relay = await startRelay(t)
  return { ingest: relay, customerUrl: relay.wsUrl, operatorUrl: relay.wsUrl }
})

deletedMessageSuite(t, 'three nodes over Redis', async (t) => {
  const redis = await startRedis(t)
  const [ingest, customerNode, operatorNode] = await startCluster(t, redis, 3)
  if (ingest === undefined || customerNode === undefined || operatorNode === undefined) throw new Error('three nodes expected')
  return { ingest, customerUrl: customerNode.wsUrl, operatorUrl: operatorNode.wsUrl }
})
