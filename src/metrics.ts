import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/** Close codes counted by their number; any other (a peer may send any) is `other`, so labels stay few. */
const KNOWN_CLOSE_CODES = new Set([1000, 1001, 1002, 1003, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 4401, 4403, 4429])

export function closeCodeLabel (code: number): string {
  return KNOWN_CLOSE_CODES.has(code) ? String(code) : 'other'
}

/** Every number the relay exposes on /metrics, on a registry of its own (several apps per test process). */
export function createMetrics (options: { defaults?: boolean } = {}) {
  const registry = new Registry()
  if (options.defaults === true) collectDefaultMetrics({ register: registry, prefix: 'relay_' })
  const registers = [registry]
  return {
    registry,
    socketsOpen: new Gauge({ name: 'relay_sockets_open', help: 'Open WebSockets', labelNames: ['endpoint', 'role'] as const, registers }),
    socketsClosed: new Counter({ name: 'relay_sockets_closed_total', help: 'Closed WebSockets by close code', labelNames: ['endpoint', 'code'] as const, registers }),
    eventsAccepted: new Counter({ name: 'relay_events_accepted_total', help: 'Events published to the bus, by route or client event', labelNames: ['source'] as const, registers }),
    eventsRejected: new Counter({ name: 'relay_events_rejected_total', help: 'Events refused because the bus was unavailable', labelNames: ['source'] as const, registers }),
    framesSent: new Counter({ name: 'relay_frames_sent_total', help: 'Frames written to sockets by fan-out (replies such as connected and error are not counted)', registers }),
    framesDropped: new Counter({ name: 'relay_frames_dropped_total', help: 'Frames not written, by reason (slow_consumer: the socket passed MAX_BUFFERED_BYTES and was closed with 1013; closing: the socket was already closing; stream_broken: a stream it reads could not be repaired and it is being closed with 1012, its client recovers them with since)', labelNames: ['reason'] as const, registers }),
    slowConsumers: new Counter({ name: 'relay_slow_consumers_total', help: 'Sockets closed with 1013 because their send buffer overflowed', registers }),
    fanoutSeconds: new Histogram({
      name: 'relay_fanout_seconds',
      help: 'Time from accepting an event to writing it to the last local socket',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
      registers
    }),
    clientFrames: new Counter({ name: 'relay_client_frames_total', help: 'Frames received from clients by outcome', labelNames: ['outcome'] as const, registers }),
    webhookCalls: new Counter({ name: 'relay_webhook_calls_total', help: 'Webhook calls by outcome', labelNames: ['outcome'] as const, registers }),
    webhookSeconds: new Histogram({ name: 'relay_webhook_seconds', help: 'Webhook call latency', buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers }),
    busUp: new Gauge({ name: 'relay_bus_up', help: '1 while the bus accepts publishes', registers }),
    draining: new Gauge({ name: 'relay_draining', help: '1 while the relay drains its sockets before shutting down', registers }),
    busReconnects: new Counter({ name: 'relay_bus_reconnects_total', help: 'Times the bus came back after being down', registers }),
    redisInfo: new Gauge({ name: 'relay_redis_info', help: 'How this node reaches Redis (mode: single, sentinel; none for the embedded bus): 1 for its mode, to break the other metrics down by mode', labelNames: ['mode'] as const, registers }),
    busResubscribes: new Counter({ name: 'relay_bus_resubscribes_total', help: 'Times the Redis bus subscribed every topic again on a new subscriber connection (the first connect included)', registers }),
    busProbeFailures: new Counter({ name: 'relay_bus_probe_failures_total', help: 'Probes this node published to itself that did not come back: its subscription died silently, so the subscriber was reconnected', registers }),
    packetErrors: new Counter({ name: 'relay_bus_packet_errors_total', help: 'Bus packets that could not be decoded', registers }),
    presenceFailures: new Counter({ name: 'relay_presence_failures_total', help: 'Presence writes Redis did not take (each is retried until it does), by operation', labelNames: ['operation'] as const, registers }),
    typingDropped: new Counter({ name: 'relay_typing_dropped_total', help: 'update_typing not relayed: over TYPING_PER_SEC for its user and chat', registers }),
    clientEventsDropped: new Counter({ name: 'relay_client_events_dropped_total', help: 'Client events never handled, by reason (socket_closed: the socket went before its turn came; queue_full: CLIENT_QUEUE_MAX events were waiting)', labelNames: ['reason'] as const, registers }),
    socketsRefused: new Counter({ name: 'relay_sockets_refused_total', help: 'Sockets refused before connected, by reason', labelNames: ['reason'] as const, registers }),
    idempotentReplays: new Counter({ name: 'relay_idempotent_replays_total', help: 'Requests with a repeated Idempotency-Key answered with the stored answer (nothing published), by route', labelNames: ['route'] as const, registers }),
    streamRepairs: new Counter({ name: 'relay_stream_repairs_total', help: 'Gaps in a stream this node found (after a resubscription or an offset jump), by outcome (repaired: read back and delivered in order; closed: unrepairable, its sockets closed with 1012; diverged: after a failover the stream holds other events at offsets this node delivered, so it got a new epoch and its sockets were closed with 1012)', labelNames: ['outcome'] as const, registers }),
    repairCloses: new Counter({ name: 'relay_stream_repair_closes_total', help: 'Sockets closed with 1012 because a stream they read could not be repaired', registers }),
    recoveries: new Counter({ name: 'relay_recoveries_total', help: 'Sockets that asked to recover (since), by outcome (recovered, not_recovered)', labelNames: ['outcome'] as const, registers }),
    replayedFrames: new Counter({ name: 'relay_replayed_frames_total', help: 'Durable frames sent from the streams on connect (since and history)', registers }),
    chatLogFailures: new Counter({ name: 'relay_chat_log_failures_total', help: 'Relay-made messages published but not remembered for marks (a mark of one answers message_not_found)', registers }),
    idempotencyFailures: new Counter({ name: 'relay_idempotency_failures_total', help: 'Idempotency records Redis did not take after the answer was decided (renew, complete, release), by operation', labelNames: ['operation'] as const, registers })
  }
}

export type Metrics = ReturnType<typeof createMetrics>
