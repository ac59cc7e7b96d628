import { handle, type Driver } from './driver-core.js'
import type { DriverRequest } from './messages.js'

/** The load driver as a child process: requests arrive over IPC, answers go back the same way. */
const state: { driver?: Driver } = {}

process.on('message', (request: DriverRequest) => {
  handle(state, request).then((answer) => {
    process.send?.(answer)
    if (request.op === 'exit') setImmediate(() => process.exit(0))
  }, (error: unknown) => {
    process.send?.({ op: 'error', message: error instanceof Error ? error.stack ?? error.message : String(error) })
  })
})
process.on('disconnect', () => process.exit(0))
process.send?.({ op: 'ready' })
