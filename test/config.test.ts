import { generateKeyPairSync } from 'node:crypto'
import t from 'tap'
import { ConfigError, loadConfig } from '../src/config.js'

t.test('defaults start a relay with generated secrets outside production', async (t) => {
  const config = loadConfig({})
  t.equal(config.PORT, 4000)
  t.equal(config.HOST, '127.0.0.1')
  t.equal(config.REDIS_PREFIX, 'relay:')
  t.equal(config.WEBHOOK_TIMEOUT_MS, 5000)
  t.equal(config.jwtAlgorithm, 'HS256')
  t.ok(config.generated.API_TOKEN !== undefined && config.generated.JWT_SECRET !== undefined)
  t.same(config.apiTokens, [config.generated.API_TOKEN])
  t.not(loadConfig({}).generated.JWT_SECRET, config.generated.JWT_SECRET, 'fresh secrets each start')
})

t.test('production refuses to start without secrets, naming the variable', async (t) => {
  t.throws(() => loadConfig({ NODE_ENV: 'production', JWT_SECRET: 'x'.repeat(32) }), new ConfigError('API_TOKEN is required when NODE_ENV=production'))
  t.throws(() => loadConfig({ NODE_ENV: 'production', API_TOKEN: 'a' }), /JWT_SECRET or JWT_PUBLIC_KEY/)
  const ok = loadConfig({ NODE_ENV: 'production', API_TOKEN: 'a, b ,c', JWT_SECRET: 'x'.repeat(32) })
  t.same(ok.apiTokens, ['a', 'b', 'c'], 'a comma list, for rotation')
  t.same(ok.generated, {})
})

t.test('bad variables are refused with their name', async (t) => {
  t.throws(() => loadConfig({ PORT: 'eighty' }), /PORT/)
  t.throws(() => loadConfig({ PORT: '70000' }), /PORT/)
  t.throws(() => loadConfig({ WEBHOOK_TIMEOUT_MS: '-1' }), /WEBHOOK_TIMEOUT_MS/)
  t.throws(() => loadConfig({ REDIS_URL: 'localhost:6379' }), /REDIS_URL/)
  t.throws(() => loadConfig({ LOG_LEVEL: 'loud' }), /LOG_LEVEL/)
  t.throws(() => loadConfig({ JWT_SECRET: 'short' }), /JWT_SECRET/)
  t.throws(() => loadConfig({ JWT_PUBLIC_KEY: 'not a pem' }), /JWT_PUBLIC_KEY/)
  t.throws(() => loadConfig({ JWT_SECRET: 'x'.repeat(32), JWT_PUBLIC_KEY: 'y' }), /exclusive/)
})

t.test('empty variables count as unset', async (t) => {
  const config = loadConfig({ JWT_SECRET: '', REDIS_URL: '', ALLOWED_ORIGINS: '' })
  t.equal(config.REDIS_URL, undefined)
  t.equal(config.allowedOrigins, null)
})

t.test('the public key decides the algorithm', async (t) => {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ type: 'spki', format: 'pem' }).toString()
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }).toString()
  t.equal(loadConfig({ JWT_PUBLIC_KEY: rsa }).jwtAlgorithm, 'RS256')
  t.equal(loadConfig({ JWT_PUBLIC_KEY: ec.replace(/\n/g, '\\n') }).jwtAlgorithm, 'ES256', 'escaped newlines are accepted')
  t.same(loadConfig({ ALLOWED_ORIGINS: 'https://a.example, https://b.example' }).allowedOrigins, ['https://a.example', 'https://b.example'])
})

t.test('where Redis is: one URL, or the Sentinels of a primary; durability follows the mode', async (t) => {
  t.equal(loadConfig({}).redis, undefined, 'neither: the embedded bus')
  const single = loadConfig({ REDIS_URL: 'redis://h:6380' })
  t.same(single.redis, { mode: 'single', url: 'redis://h:6380' })
  t.equal(single.replicaAcks, 0, 'one Redis: nothing to wait for')
  const sentinel = loadConfig({ REDIS_SENTINELS: 'a:26379, [::1]:26380', REDIS_SENTINEL_NAME: 'relay', REDIS_PASSWORD: 'p' })
  t.same(sentinel.redis, { mode: 'sentinel', sentinels: [{ host: 'a', port: 26379 }, { host: '::1', port: 26380 }], name: 'relay', password: 'p' })
  t.equal(sentinel.replicaAcks, 1, 'Sentinel: an event is acknowledged once a replica holds it')
  t.equal(loadConfig({ REDIS_SENTINELS: 'a:1', REDIS_REPLICA_ACKS: '0' }).replicaAcks, 0, 'unless told otherwise')
  t.equal((loadConfig({ REDIS_SENTINELS: 'a:1' }).redis as { name: string }).name, 'mymaster', 'the Sentinels\' usual default name')
  t.throws(() => loadConfig({ REDIS_SENTINELS: 'a:1', REDIS_URL: 'redis://h' }), /REDIS_URL and REDIS_SENTINELS are exclusive/)
  t.throws(() => loadConfig({ REDIS_SENTINELS: 'a:1,b' }), /REDIS_SENTINELS: "b" is not host:port/)
  t.throws(() => loadConfig({ REDIS_SENTINELS: 'a:99999' }), /REDIS_SENTINELS: "a:99999" is not host:port/)
  t.throws(() => loadConfig({ REDIS_SENTINELS: ' , ' }), /REDIS_SENTINELS names no server/)
  const cluster = loadConfig({ REDIS_CLUSTER_NODES: 'n1:7000,n2:7001', REDIS_PASSWORD: 'p' })
  t.same(cluster.redis, { mode: 'cluster', nodes: [{ host: 'n1', port: 7000 }, { host: 'n2', port: 7001 }], password: 'p' })
  t.equal(cluster.replicaAcks, 1, 'Cluster: each master\'s replica holds an event before it is acknowledged')
  t.throws(() => loadConfig({ REDIS_CLUSTER_NODES: 'n1:7000', REDIS_PREFIX: 'relay{x}:' }), /REDIS_PREFIX must not contain/)
  t.throws(() => loadConfig({ REDIS_CLUSTER_NODES: 'n1:7000', REDIS_SENTINELS: 'a:1' }), /REDIS_SENTINELS and REDIS_CLUSTER_NODES are exclusive/)
  t.equal(cluster.consoleLanes, 8, 'console topics in 8 lanes on a cluster')
  t.equal(single.consoleLanes, 1, 'and plain on one Redis')
  t.equal(loadConfig({ CONSOLE_LANES: '3' }).consoleLanes, 3)
  t.throws(() => loadConfig({ CONSOLE_LANES: '0' }), /CONSOLE_LANES/)
  t.throws(() => loadConfig({ CONSOLE_LANES: '65' }), /CONSOLE_LANES/)
  t.throws(() => loadConfig({ REDIS_URL: 'redis://h', REDIS_PASSWORD: 'p' }), /put them in the URL/)
  t.throws(() => loadConfig({ REDIS_REPLICA_ACKS: '-1' }), /REDIS_REPLICA_ACKS/)
})
