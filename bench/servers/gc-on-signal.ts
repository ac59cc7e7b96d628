/**
 * Preloaded into every server of the idle scenario (`node --expose-gc --import`): on SIGWINCH a full
 * collection, then one line on stderr with the memory after it. Memory per idle connection then counts
 * what a connection retains, not garbage the collector had not reached yet, for every system alike.
 */
process.on('SIGWINCH', () => {
  const collect = (globalThis as { gc?: () => void }).gc
  collect?.()
  collect?.()
  const { rss, heapUsed, external } = process.memoryUsage()
  process.stderr.write(`bench-memory ${JSON.stringify({ rss, heapUsed, external })}\n`)
})
