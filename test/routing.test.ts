import t from 'tap'
import { startRelay } from './helpers/relay.js'
import { routingSuite } from './helpers/routing-suite.js'

t.test('routing on one node with the embedded bus', async (t) => {
  routingSuite(t, async (t) => {
    const relay = await startRelay(t)
    return { socketUrls: [relay.wsUrl], post: relay.post }
  })
})
