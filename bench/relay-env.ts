import { randomBytes } from 'node:crypto'

/** The secrets of one benchmark invocation, and the environment every relay node it starts runs with. */
export const API_TOKEN = `bench-${randomBytes(8).toString('hex')}`
export const JWT_SECRET = randomBytes(24).toString('base64url')

/** Each call names a fresh REDIS_PREFIX, so no case reads another's keys. */
export function relayEnv (): Record<string, string> {
  return {
    NODE_ENV: 'production',
    HOST: '127.0.0.1',
    API_TOKEN,
    JWT_SECRET,
    LOG_LEVEL: 'warn',
    REDIS_PREFIX: `bench-${randomBytes(4).toString('hex')}:`,
    DRAIN_WINDOW_MS: '0',
    SHUTDOWN_TIMEOUT_MS: '5000',
    // Every bench client is a user of its own (workload.ts), so MAX_SOCKETS_PER_USER's default holds;
    // the per-address and total caps stay off whatever the caller's environment says: (g) opens
    // 50,000 sockets from four loopback addresses.
    MAX_CONNECTIONS_PER_IP: '0',
    MAX_CONNECTIONS: '0'
  }
}
