import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';

/**
 * The app's own Prometheus registry (never the global one, so tests can build many apps). Labels carry only
 * bounded, non-patient values: model names from the registry, versions, tiers, route patterns, status codes.
 */
export function createMetrics(options: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: 'triage_process_' });

  const latencyBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
  return {
    registry,
    httpRequestDuration: new Histogram({
      name: 'triage_http_request_duration_seconds',
      help: 'HTTP request duration by route pattern, method, status code, and for predictions model, version and tier',
      labelNames: ['route', 'method', 'status', 'model', 'version', 'tier'] as const,
      buckets: latencyBuckets,
      registers: [registry],
    }),
    inferenceDuration: new Histogram({
      name: 'triage_inference_duration_seconds',
      help: 'Model runtime duration per run (one run may score a coalesced batch)',
      labelNames: ['model', 'version', 'tier', 'status'] as const,
      buckets: latencyBuckets,
      registers: [registry],
    }),
    inferenceBatchSize: new Histogram({
      name: 'triage_inference_batch_rows',
      help: 'Rows per model run after dynamic batching',
      labelNames: ['model', 'version'] as const,
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
      registers: [registry],
    }),
    inFlight: new Gauge({
      name: 'triage_inference_in_flight',
      help: 'Sync prediction requests admitted and not yet finished, per model',
      labelNames: ['model'] as const,
      registers: [registry],
    }),
    shed: new Counter({
      name: 'triage_shed_total',
      help: 'Requests refused at once with 503 because the model was at its concurrency bound',
      labelNames: ['model'] as const,
      registers: [registry],
    }),
    deadlineExceeded: new Counter({
      name: 'triage_deadline_exceeded_total',
      help: 'Sync requests answered 504 because no score was ready within the deadline',
      labelNames: ['model'] as const,
      registers: [registry],
    }),
    warmupLatency: new Gauge({
      name: 'triage_model_warmup_p99_seconds',
      help: 'p99 latency of a single-row run measured during warm-up',
      labelNames: ['model', 'version'] as const,
      registers: [registry],
    }),
    modelRefused: new Gauge({
      name: 'triage_model_refused',
      help: '1 when a model was refused at start (for example its warm-up latency broke its budget)',
      labelNames: ['model', 'reason'] as const,
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
