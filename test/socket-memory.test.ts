import type { IncomingMessage } from 'node:http'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import t from 'tap'
import { closeAll, join } from './helpers/client.js'
import { customerToken, operatorToken, startRelay } from './helpers/relay.js'
import { chatOf, messageOf } from './helpers/routing-suite.js'

// A real collection, so the test sees what an open socket keeps alive (the flag is read when gc is made).
setFlagsFromString('--expose-gc')
const collect = runInNewContext('gc') as () => void

async function collectGarbage (): Promise<void> {
  for (let round = 0; round < 4; round++) {
    collect()
    await new Promise((resolve) => setImmediate(resolve))
  }
}

t.test('an open socket does not keep its upgrade request (URL with the token, headers, Fastify request and reply)', async (t) => {
  const relay = await startRelay(t)
  const upgrades: Array<WeakRef<IncomingMessage>> = []
  relay.app.server.prependListener('upgrade', (request: IncomingMessage) => { upgrades.push(new WeakRef(request)) })

  const customer = await join(relay.wsUrl, '/chat', { token: customerToken(1, 'c1') })
  const operator = await join(relay.wsUrl, '/chat', { token: operatorToken(2, { chat: 'c1' }) })
  const operatorConsole = await join(relay.wsUrl, '/broadcast', { token: operatorToken(3) })
  t.teardown(() => closeAll(customer, operator, operatorConsole))
  t.equal(upgrades.length, 3, 'three upgrades seen')

  await collectGarbage()
  t.same(upgrades.map((ref) => ref.deref() === undefined), [true, true, true], 'every upgrade request was collected')

  // The sockets are whole after that: they still get what is routed to them.
  const message = messageOf(chatOf('c1'))
  await relay.post('/message', { message })
  for (const client of [customer, operator, operatorConsole]) {
    const added = await client.next('message_added')
    t.equal(added.data.message.id, message.id, `${client.name} still receives`)
  }
})
