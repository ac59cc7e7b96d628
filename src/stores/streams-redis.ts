import { ALREADY_APPENDED, newEpoch, type DurableEvent, type ReadOptions, type StreamPosition, type StreamRead, type StreamRetention } from './bus.js'
import { LuaScript, type RedisCommands } from './redis.js'
import { Topic } from '../protocol/routing.js'
import type { DurableParts } from '../protocol/packet.js'

/**
 * A stream's position and what every script does with it. Position hash: `e` epoch, `o` top offset, `n`
 * the counter of relay-made messages (chat streams). The epoch is made when the hash is missing (a new
 * stream, or Redis lost it), or when a reader holds an offset above the top (Redis came back from an
 * older snapshot): offsets are never reused within an epoch. A new epoch drops the old history.
 */
const POSITION_FUNCTION = `
local function position (meta, history, candidate, ttl, known)
  local fields = redis.call('HMGET', meta, 'e', 'o')
  local epoch, offset = fields[1], tonumber(fields[2] or '0')
  if not epoch or (known and offset < known) then
    epoch = candidate
    redis.call('HSET', meta, 'e', epoch, 'o', offset)
    redis.call('DEL', history)
  end
  redis.call('EXPIRE', meta, ttl)
  return epoch, offset
end`

/** The WebSocket text frame header for a payload of this many bytes (packet.ts writeHeader). */
const FRAME_HEADER_FUNCTION = `
local function frame_header (length)
  if length < 126 then return string.char(129, length) end
  if length < 65536 then return string.char(129, 126, math.floor(length / 256), length % 256) end
  local high, low = math.floor(length / 4294967296), length % 4294967296
  return string.char(129, 127,
    math.floor(high / 16777216) % 256, math.floor(high / 65536) % 256, math.floor(high / 256) % 256, high % 256,
    math.floor(low / 16777216) % 256, math.floor(low / 65536) % 256, math.floor(low / 256) % 256, low % 256)
end`

/**
 * One durable event for one stream: offset + 1, the packet with its epoch and offset (packet.ts
 * durablePacket, the same bytes), XADD (when history is kept), PUBLISH.
 */
const APPEND_ONE_FUNCTION = `${POSITION_FUNCTION}${FRAME_HEADER_FUNCTION}
local PUBLISH = 'PUBLISH'
local function append_one (history, meta, candidate, size, ttl, position_ttl, payload_head, routing_head, name, channel)
  local epoch = position(meta, history, candidate, position_ttl, nil)
  local offset = redis.call('HINCRBY', meta, 'o', 1)
  local payload = payload_head .. ',"stream":' .. name .. ',"offset":' .. offset .. '}'
  local packet = routing_head .. ',"e":"' .. epoch .. '","o":' .. offset .. '}\\n' .. frame_header(#payload) .. payload
  if size > 0 then
    redis.call('XADD', history, 'MAXLEN', '~', size, offset .. '-0', 'p', packet)
    redis.call('EXPIRE', history, ttl)
  end
  redis.call(PUBLISH, channel, packet)
end`

/**
 * `emit(channel, packet)` for scripts that publish what they decide (presence): a packet that starts
 * with a NUL byte is a durable event (RedisStreams.durableArgument: its keys, retention and heads as
 * `<bytes>:<item>` fields) and is appended; any other is published as it is. The stream keys come
 * inside the argument, not in KEYS (not Redis Cluster safe; a later issue).
 */
export const EMIT_FUNCTIONS = `${APPEND_ONE_FUNCTION}
-- Reads \`<bytes>:<item>\` fields of a blob from \`start\`: each call the next item; done() once all are read.
local function fields_of (blob, start)
  local at = start
  local function next_field ()
    local colon = string.find(blob, ':', at, true)
    local length = tonumber(string.sub(blob, at, colon - 1))
    at = colon + length + 1
    return string.sub(blob, colon + 1, colon + length)
  end
  return next_field, function () return at > #blob end
end

local function emit (channel, packet)
  if string.byte(packet, 1) ~= 0 then return redis.call(PUBLISH, channel, packet) end
  local field = fields_of(packet, 2)
  local history, meta, candidate, size, ttl, position_ttl = field(), field(), field(), tonumber(field()), field(), field()
  local routing_head, payload_head, name = field(), field(), field()
  append_one(history, meta, candidate, size, ttl, position_ttl, payload_head, routing_head, name, channel)
end`

/** ARGV: channel and packet pairs, each emitted (see EMIT_FUNCTIONS). */
export const EMIT = new LuaScript(`${EMIT_FUNCTIONS}
for i = 1, #ARGV, 2 do emit(ARGV[i], ARGV[i + 1]) end
return 1`)

/**
 * KEYS: history and position of each stream, then (numbered) the chat's position and history, then (once)
 * the once key. ARGV: stream count, epoch candidate, history size, history TTL, position TTL, once TTL
 * ('' for none), numbered ('1' or ''), payload count, each payload as its piece count and pieces, then per stream: payload
 * index, routing head, name as JSON, channel. All of an event's streams in one step: it is published
 * everywhere or nowhere, and under a once key at most once (-1: it was).
 */
const APPEND_SOURCE = `${APPEND_ONE_FUNCTION}
local count, candidate, size, ttl, position_ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
if ARGV[6] ~= '' and not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'EX', ARGV[6]) then return -1 end
local number = 0
if ARGV[7] == '1' then
  position(KEYS[2 * count + 1], KEYS[2 * count + 2], candidate, position_ttl, nil)
  number = redis.call('HINCRBY', KEYS[2 * count + 1], 'n', 1)
  -- A retry that finds the once key learns the number the event took (a cluster appends stream by stream).
  if ARGV[6] ~= '' then redis.call('SET', KEYS[#KEYS], number, 'KEEPTTL') end
end
local at = 9
local payloads = {}
for index = 1, tonumber(ARGV[8]) do
  local pieces = tonumber(ARGV[at])
  payloads[index] = table.concat(ARGV, tostring(number), at + 1, at + pieces)
  at = at + pieces + 1
end
for stream = 1, count do
  append_one(KEYS[2 * stream - 1], KEYS[2 * stream], candidate, size, ttl, position_ttl,
    payloads[tonumber(ARGV[at])], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3])
  at = at + 4
end
return number`

const APPEND = new LuaScript(APPEND_SOURCE)
/** On a cluster: the same, publishing on shard channels (the stream's slot) with SPUBLISH. */
const SHARDED_APPEND = new LuaScript(sharded(APPEND_SOURCE))

/**
 * APPEND for acknowledgement after replication (REDIS_REPLICA_ACKS with history): the same steps,
 * but nothing is published here. It answers {number, channel, packet, …}; the node publishes them only
 * once WAIT says the replicas hold the event, so no node ever delivers an event a failover could lose
 * (a promoted replica would number other events with its offsets). The once key keeps the number and
 * the offsets, so a retry (answered -1) gets the stored packets again to publish: an event whose WAIT
 * fell short reaches the sockets once it is replicated, never twice (readers drop a repeated offset).
 */
const APPEND_DEFERRED = new LuaScript(`${POSITION_FUNCTION}${FRAME_HEADER_FUNCTION}
local function stored_one (history, meta, candidate, size, ttl, position_ttl, payload_head, routing_head, name)
  local epoch = position(meta, history, candidate, position_ttl, nil)
  local offset = redis.call('HINCRBY', meta, 'o', 1)
  local payload = payload_head .. ',"stream":' .. name .. ',"offset":' .. offset .. '}'
  local packet = routing_head .. ',"e":"' .. epoch .. '","o":' .. offset .. '}\\n' .. frame_header(#payload) .. payload
  redis.call('XADD', history, 'MAXLEN', '~', size, offset .. '-0', 'p', packet)
  redis.call('EXPIRE', history, ttl)
  return offset, packet
end
local count, candidate, size, ttl, position_ttl = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local at = 9
local first_piece = {}
for index = 1, tonumber(ARGV[8]) do
  first_piece[index] = at
  at = at + tonumber(ARGV[at]) + 1
end
if ARGV[6] ~= '' and not redis.call('SET', KEYS[#KEYS], '1', 'NX', 'EX', ARGV[6]) then
  local answer = {-1}
  local stored = redis.call('GET', KEYS[#KEYS]) or ''
  local stream = 1
  for offset in string.gmatch(string.match(stored, ':(.*)$') or '', '%d+') do
    local entries = redis.call('XRANGE', KEYS[2 * stream - 1], offset .. '-0', offset .. '-0')
    if entries[1] then
      answer[#answer + 1] = ARGV[at + 3]
      answer[#answer + 1] = entries[1][2][2]
    end
    stream = stream + 1
    at = at + 4
  end
  return answer
end
local number = 0
if ARGV[7] == '1' then
  position(KEYS[2 * count + 1], KEYS[2 * count + 2], candidate, position_ttl, nil)
  number = redis.call('HINCRBY', KEYS[2 * count + 1], 'n', 1)
end
local payloads = {}
for index, from in ipairs(first_piece) do
  payloads[index] = table.concat(ARGV, tostring(number), from + 1, from + tonumber(ARGV[from]))
end
local answer = {number}
local offsets = {}
for stream = 1, count do
  local offset, packet = stored_one(KEYS[2 * stream - 1], KEYS[2 * stream], candidate, size, ttl, position_ttl,
    payloads[tonumber(ARGV[at])], ARGV[at + 1], ARGV[at + 2])
  offsets[#offsets + 1] = offset
  answer[#answer + 1] = ARGV[at + 3]
  answer[#answer + 1] = packet
  at = at + 4
end
if ARGV[6] ~= '' then redis.call('SET', KEYS[#KEYS], number .. ':' .. table.concat(offsets, ','), 'KEEPTTL') end
return answer`)

/** A script's sharded twin: SPUBLISH, whose channel hashes to the slot of the keys it writes. */
export function sharded (source: string): string {
  return source.replace("local PUBLISH = 'PUBLISH'", "local PUBLISH = 'SPUBLISH'")
}

/** KEYS: position and history per stream. ARGV: epoch candidate, position TTL. Returns epoch, offset per stream. */
const POSITIONS = new LuaScript(`${POSITION_FUNCTION}
local answer = {}
for stream = 1, #KEYS / 2 do
  local epoch, offset = position(KEYS[2 * stream - 1], KEYS[2 * stream], ARGV[1], ARGV[2], nil)
  answer[2 * stream - 1] = epoch
  answer[2 * stream] = offset
end
return answer`)

/**
 * KEYS: history, position. ARGV: after, up to ('' for the top), limit, newest first ('1'), epoch
 * candidate, position TTL, known offset (''). Returns epoch, top, then offset and packet per event.
 */
const READ = new LuaScript(`${POSITION_FUNCTION}
local known = ARGV[7] ~= '' and tonumber(ARGV[7]) or nil
local epoch, top = position(KEYS[2], KEYS[1], ARGV[5], ARGV[6], known)
local after, up_to = tonumber(ARGV[1]), top
if ARGV[2] ~= '' then up_to = math.min(top, tonumber(ARGV[2])) end
local answer = { epoch, top }
if up_to <= after then return answer end
local entries
if ARGV[4] == '1' then
  entries = redis.call('XREVRANGE', KEYS[1], up_to .. '-0', (after + 1) .. '-0', 'COUNT', ARGV[3])
else
  entries = redis.call('XRANGE', KEYS[1], (after + 1) .. '-0', up_to .. '-0', 'COUNT', ARGV[3])
end
for _, entry in ipairs(entries) do
  answer[#answer + 1] = tonumber(string.match(entry[1], '^(%d+)'))
  answer[#answer + 1] = entry[2][2]
end
return answer`)

export interface ReplicaAcks { replicas: number, timeoutMs: number }

/**
 * WAIT on the master of `key`'s slot, on the connection that wrote there (a pipeline led by a read of
 * the key goes to it); on one Redis, simply WAIT. A MOVED refreshes the cluster's slot cache and fails:
 * the retry of the same event finds the slot.
 */
async function waitOnMaster (client: RedisCommands, key: string, replicas: number, timeoutMs: number): Promise<number> {
  const answers = await client.pipeline().exists(key).wait(replicas, timeoutMs).exec()
  const error = answers?.find(([failed]) => failed !== null)?.[0] ?? (answers?.length === 2 ? null : new Error('no answer'))
  if (error !== null) {
    if ('refreshSlotsCache' in client && /^(MOVED|ASK)\b/.test(error.message)) client.refreshSlotsCache()
    throw error
  }
  return Number(answers?.[1]?.[1])
}

/** The streams of the Redis bus: `<prefix>history:<topic>` (a Redis stream) and `<prefix>position:<topic>` (a hash). */
export class RedisStreams {
  constructor (
    readonly client: RedisCommands,
    readonly prefix: string,
    readonly retention: StreamRetention,
    /** Replicas that must hold an append before it resolves, and how long to wait for them. */
    readonly durability: ReplicaAcks = { replicas: 0, timeoutMs: 0 },
    /** On a Redis Cluster: each stream's keys and channel under the hash tag `{<topic>}`, one slot each. */
    readonly isSharded = false
  ) {}

  #named (topic: string): string {
    return this.isSharded ? `{${topic}}` : topic
  }

  history (topic: string): string {
    return `${this.prefix}history:${this.#named(topic)}`
  }

  position (topic: string): string {
    return `${this.prefix}position:${this.#named(topic)}`
  }

  channel (topic: string): string {
    return this.prefix + this.#named(topic)
  }

  #once (token: string, topic: string): string {
    return this.isSharded ? `${this.prefix}once:{${topic}}:${token}` : `${this.prefix}once:${token}`
  }

  async append (event: DurableEvent): Promise<number> {
    if (this.isSharded) return await this.#appendSharded(event)
    const answer = await this.#appendAll(event)
    // Also after ALREADY_APPENDED: a retry is acknowledged only once the first append is replicated.
    if (!this.#deferred) await this.#replicated()
    return answer
  }

  /**
   * On a cluster, stream by stream (each script one slot): the numbered chat's first, so the others
   * carry the number it took. Not all or nothing across streams: a failure answers 503, and the retry
   * (same once token, one once key per stream) appends only what is missing, with the same number.
   */
  async #appendSharded (event: DurableEvent): Promise<number> {
    const appends = [...event.appends]
    let number = 0
    let fresh = false
    if (event.numbered !== undefined) {
      const chat = Topic.chat(event.numbered.chatUuid)
      const index = appends.findIndex((item) => item.topic === chat)
      const own = index < 0 ? [] : appends.splice(index, 1)
      const answer = await this.#appendOne(event, own, chat)
      if (answer === ALREADY_APPENDED && event.once !== undefined) {
        // `<number>` or, published after replication, `<number>:<offsets>`.
        number = Number.parseInt(await this.client.get(this.#once(event.once.token, chat)) ?? '0', 10)
      } else {
        number = answer
        fresh = true
      }
    }
    const filled: DurableEvent = { ...event, payloads: event.payloads.map((pieces) => [pieces.join(String(number))]) }
    delete filled.numbered
    const answers = await Promise.all(appends.map(async (item) => await this.#appendOne(filled, [item], item.topic)))
    fresh ||= answers.some((answer) => answer !== ALREADY_APPENDED)
    return fresh ? number : ALREADY_APPENDED
  }

  /** APPEND on `appends` (all in `slotTopic`'s slot), numbering if the event is numbered. */
  async #appendOne (event: DurableEvent, appends: DurableEvent['appends'], slotTopic: string): Promise<number> {
    const keys: string[] = []
    const args: Array<string | number> = [
      appends.length, newEpoch(), this.retention.size, this.retention.ttlSeconds,
      this.retention.positionTtlSeconds, event.once === undefined ? '' : event.once.ttlSeconds, event.numbered === undefined ? '' : '1', event.payloads.length
    ]
    for (const pieces of event.payloads) args.push(pieces.length, ...pieces)
    for (const { topic, routingHead, payload } of appends) {
      keys.push(this.history(topic), this.position(topic))
      args.push(payload + 1, routingHead, JSON.stringify(topic), this.channel(topic))
    }
    if (event.numbered !== undefined) {
      const chat = Topic.chat(event.numbered.chatUuid)
      keys.push(this.position(chat), this.history(chat))
    }
    if (event.once !== undefined) keys.push(this.#once(event.once.token, slotTopic))
    if (this.durability.replicas === 0) return Number(await SHARDED_APPEND.run(this.client, keys, args))
    const reply = this.#deferred
      ? await APPEND_DEFERRED.runBuffer(this.client, keys, args) as Array<number | Buffer>
      : [Number(await SHARDED_APPEND.run(this.client, keys, args))]
    // Each stream's master replicates on its own: wait on each, right after its append.
    await this.#replicated(keys[0])
    await this.#publishPairs(reply)
    return Number(reply[0])
  }

  async #appendAll (event: DurableEvent): Promise<number> {
    const keys: string[] = []
    const args: Array<string | number> = [
      event.appends.length, newEpoch(), this.retention.size, this.retention.ttlSeconds,
      this.retention.positionTtlSeconds, event.once === undefined ? '' : event.once.ttlSeconds, event.numbered === undefined ? '' : '1', event.payloads.length
    ]
    for (const pieces of event.payloads) args.push(pieces.length, ...pieces)
    for (const { topic, routingHead, payload } of event.appends) {
      keys.push(this.history(topic), this.position(topic))
      args.push(payload + 1, routingHead, JSON.stringify(topic), this.channel(topic))
    }
    if (event.numbered !== undefined) {
      const chat = Topic.chat(event.numbered.chatUuid)
      keys.push(this.position(chat), this.history(chat))
    }
    if (event.once !== undefined) keys.push(this.#once(event.once.token, event.appends[0]?.topic ?? ''))
    if (!this.#deferred) return Number(await APPEND.run(this.client, keys, args))
    const reply = await APPEND_DEFERRED.runBuffer(this.client, keys, args) as Array<number | Buffer>
    await this.#replicated()
    await this.#publishPairs(reply)
    return Number(reply[0])
  }

  /** Publish only after replication (see APPEND_DEFERRED): needs history, to publish again on a retry. */
  get #deferred (): boolean {
    return this.durability.replicas > 0 && this.retention.size > 0
  }

  /** Publishes the channel and packet pairs after the number APPEND_DEFERRED answered. */
  async #publishPairs (reply: Array<number | Buffer>): Promise<void> {
    const sends: Array<Promise<unknown>> = []
    for (let index = 1; index + 1 < reply.length; index += 2) {
      const channel = reply[index] as Buffer
      const packet = reply[index + 1] as Buffer
      sends.push(this.isSharded ? this.client.spublish(channel, packet) : this.client.publish(channel, packet))
    }
    await Promise.all(sends)
  }

  /**
   * Waits until `replicas` replicas hold every write of this connection so far (on a cluster: to the
   * master of `key`'s slot): what a failover promotes then has the event. Replication is asynchronous,
   * so without it an acknowledged event could vanish.
   */
  async #replicated (key?: string): Promise<void> {
    const { replicas, timeoutMs } = this.durability
    if (replicas === 0) return
    const acked = this.isSharded ? await waitOnMaster(this.client, key as string, replicas, timeoutMs) : await this.client.wait(replicas, timeoutMs)
    if (acked < replicas) throw new Error(`held by ${acked} of ${replicas} replicas within ${timeoutMs} ms`)
  }

  /** A durable event as a packet argument of a script that emits (see EMIT_FUNCTIONS). */
  durableArgument (topic: string, parts: DurableParts): Buffer {
    const fields = [
      this.history(topic), this.position(topic), newEpoch(), String(this.retention.size), String(this.retention.ttlSeconds),
      String(this.retention.positionTtlSeconds), parts.routingHead, parts.payloadHead, JSON.stringify(topic)
    ]
    return Buffer.concat([Buffer.from([0]), ...fields.map((field) => Buffer.from(`${Buffer.byteLength(field)}:${field}`))])
  }

  async positions (topics: string[]): Promise<StreamPosition[]> {
    // On a cluster, one script per stream (each its own slot).
    if (this.isSharded && topics.length > 1) return (await Promise.all(topics.map(async (topic) => await this.positions([topic])))).flat()
    const keys = topics.flatMap((topic) => [this.position(topic), this.history(topic)])
    const answer = await POSITIONS.run(this.client, keys, [newEpoch(), this.retention.positionTtlSeconds]) as Array<string | number>
    return topics.map((_topic, index) => ({ epoch: String(answer[2 * index]), offset: Number(answer[2 * index + 1]) }))
  }

  async read (topic: string, options: ReadOptions): Promise<StreamRead> {
    const answer = await READ.runBuffer(this.client, [this.history(topic), this.position(topic)], [
      options.after, options.upTo ?? '', options.limit, options.newest === true ? '1' : '0',
      newEpoch(), this.retention.positionTtlSeconds, options.known ?? ''
    ]) as Array<Buffer | number>
    const read: StreamRead = {
      position: { epoch: String(answer[0]), offset: Number(answer[1]) },
      packets: [],
      offsets: []
    }
    for (let index = 2; index + 1 < answer.length; index += 2) {
      read.offsets.push(Number(answer[index]))
      read.packets.push(answer[index + 1] as Buffer)
    }
    if (options.newest === true) {
      read.offsets.reverse()
      read.packets.reverse()
    }
    return read
  }
}
