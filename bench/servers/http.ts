import type { IncomingMessage, Server, ServerResponse } from 'node:http'

/**
 * The plumbing the peer servers share, so that they differ only in how they fan out: the same ingest
 * (POST /message with a JSON body, 200 {"ok":true} once handed on) and the same /ready.
 */

export async function readBody (request: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of request) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

export function answer (response: ServerResponse, status: number, body: string): void {
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  response.end(body)
}

/** Routes GET /ready and POST /message; `ingest` receives the parsed body and resolves once handed on. */
export function ingestHandler (ingest: (body: unknown) => Promise<void> | void) {
  return (request: IncomingMessage, response: ServerResponse): void => {
    if (request.method === 'GET' && request.url === '/ready') return answer(response, 200, '{"status":"ready"}')
    if (request.method !== 'POST' || request.url !== '/message') return answer(response, 404, '{"error":"not found"}')
    readBody(request)
      .then(async (bytes) => { await ingest(JSON.parse(bytes.toString('utf8'))) })
      .then(() => answer(response, 200, '{"ok":true}'), (error: unknown) => answer(response, 400, JSON.stringify({ error: String(error) })))
  }
}

export function portFromEnv (): number {
  const port = Number(process.env.PORT)
  if (!Number.isInteger(port) || port <= 0) throw new Error('PORT must name the port to listen on')
  return port
}

export async function listen (server: Server, port: number): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => resolve())
  })
}

/** Exits 0 on SIGTERM/SIGINT after `close`, or 1 if it takes over `boundMs`. */
export function exitOnSignal (close: () => Promise<void>, boundMs = 5000): void {
  const stop = (): void => {
    setTimeout(() => process.exit(1), boundMs).unref()
    close().then(() => process.exit(0), () => process.exit(1))
  }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
}
