/**
 * `npm run token -- --role user --chat <uuid> --sub 7 [--ttl 1h]`: prints a socket JWT signed with the
 * relay's JWT_SECRET (scripts/token-command.ts). Exit codes: 0 printed, 1 no usable secret, 2 bad flags.
 */
import { main } from './token-command.js'

process.exitCode = await main(process.argv.slice(2))
