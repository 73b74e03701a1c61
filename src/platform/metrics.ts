import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import { HotHistogram } from './hot-histogram.ts';

const UNLINTABLE_DEFAULT_METRICS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

/**
 * The app's own Prometheus registry (never the global one, so tests can build many apps). Labels carry only
 * bounded, non-patient values: model names from the registry, versions, tiers, route patterns, status codes.
 */
export function createMetrics(options: { defaultMetrics?: boolean } = {}) {
  const registry = new Registry();
  if (options.defaultMetrics) {
    // the stock names (process_cpu_seconds_total, nodejs_eventloop_lag_seconds, …), unprefixed: what Node.js
    // dashboards and alerts query
    collectDefaultMetrics({ register: registry });
    // except three gauges named like counters (promtool flags "_total" on a gauge); their per-type breakdowns
    // (nodejs_active_handles{type}, …) stay, and sum() over them is the total
    for (const name of UNLINTABLE_DEFAULT_METRICS) registry.removeSingleMetric(name);
  }

  const latencyBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5];
  return {
    registry,
    // every request observes it: the hot histogram skips prom-client's per-observation label validation and hashing
    httpRequestDuration: new HotHistogram({
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
    jobQueueWait: new Histogram({
      name: 'triage_job_queue_wait_seconds',
      help: 'Time from acceptance to the first start of an async job or a batch run',
      labelNames: ['model', 'tier'] as const,
      buckets: [0.005, 0.025, 0.1, 0.5, 1, 5, 15, 60, 300, 1800, 3600],
      registers: [registry],
    }),
    jobDuration: new Histogram({
      name: 'triage_job_duration_seconds',
      help: 'Time an async job attempt took, from its start to its result held, released or failed',
      labelNames: ['model', 'tier', 'outcome'] as const,
      buckets: [0.005, 0.025, 0.1, 0.5, 1, 5, 15, 60, 300],
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
      help: 'Requests refused at once with 503: the model at its concurrency bound, or a wait that would break the deadline',
      labelNames: ['model', 'reason'] as const,
      registers: [registry],
    }),
    deadlineExceeded: new Counter({
      name: 'triage_deadline_exceeded_total',
      help: 'Sync requests answered 504 because no score was ready within the deadline',
      labelNames: ['model'] as const,
      registers: [registry],
    }),
    deadlineOverrun: new Histogram({
      name: 'triage_deadline_overrun_seconds',
      help: 'How long after its deadline a 504 left, counted from the request arrival (the promise: within 10 ms)',
      labelNames: ['model'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
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
    jobs: new Counter({
      name: 'triage_jobs_total',
      help: 'Async job transitions, by the state entered',
      labelNames: ['model', 'state'] as const,
      registers: [registry],
    }),
    decisions: new Counter({
      name: 'triage_review_decisions_total',
      help: 'Clinician review decisions applied, by outcome',
      labelNames: ['model', 'outcome'] as const,
      registers: [registry],
    }),
    overrides: new Counter({
      name: 'triage_review_overrides_total',
      help: 'Held results released with an amended output',
      labelNames: ['model'] as const,
      registers: [registry],
    }),
    escalations: new Counter({
      name: 'triage_review_escalations_total',
      help: 'Holds escalated for waiting past their review deadline',
      labelNames: ['model'] as const,
      registers: [registry],
    }),
    callbackAttempts: new Counter({
      name: 'triage_callback_attempts_total',
      help: 'Callback delivery attempts, by outcome (delivered, failed)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    callbackDeadLetters: new Counter({
      name: 'triage_callback_dead_letters_total',
      help: 'Callbacks that exhausted their attempts and went to the dead-letter list',
      registers: [registry],
    }),
    shadowPairs: new Counter({
      name: 'triage_shadow_pairs_total',
      help: 'Primary/shadow prediction pairs recorded, by agreement at the approved threshold',
      labelNames: ['model', 'version', 'agreement'] as const,
      registers: [registry],
    }),
    shadowErrors: new Counter({
      name: 'triage_shadow_errors_total',
      help: 'Shadow runs that failed (they never affect the primary answer)',
      labelNames: ['model', 'version'] as const,
      registers: [registry],
    }),
    shadowDropped: new Counter({
      name: 'triage_shadow_dropped_total',
      help: 'Sampled shadow runs skipped: the shadow saturated, or the event loop under pressure (bedside first)',
      labelNames: ['model', 'reason'] as const,
      registers: [registry],
    }),
    shadowLatency: new Histogram({
      name: 'triage_shadow_latency_seconds',
      help: 'Shadow run latency',
      labelNames: ['model', 'version'] as const,
      buckets: latencyBuckets,
      registers: [registry],
    }),
    routedRequests: new Counter({
      name: 'triage_routed_requests_total',
      help: 'Sync requests by the version that answered and why (primary, canary, fallback)',
      labelNames: ['model', 'version', 'route'] as const,
      registers: [registry],
    }),
    remoteEvents: new Counter({
      name: 'triage_remote_events_total',
      help: 'Remote runtime (SageMaker, Vertex AI) retries, give-ups, timeouts, short circuits and breaker changes',
      labelNames: ['model', 'version', 'event'] as const,
      registers: [registry],
    }),
    fallbacks: new Counter({
      name: 'triage_fallback_total',
      help: 'Requests answered by a declared fallback version because the remote version failed',
      labelNames: ['model', 'version', 'reason'] as const,
      registers: [registry],
    }),
    batchYield: new Counter({
      name: 'triage_batch_yield_seconds_total',
      help: 'Time batch chunks waited for bedside traffic (the event loop busy) before scoring',
      labelNames: ['model'] as const,
      registers: [registry],
    }),
    batchRows: new Counter({
      name: 'triage_batch_rows_total',
      help: 'Batch rows committed, by outcome (scored, failed)',
      labelNames: ['model', 'outcome'] as const,
      registers: [registry],
    }),
    batchRunDuration: new Histogram({
      name: 'triage_batch_run_duration_seconds',
      help: 'Duration of batch runs, by outcome',
      labelNames: ['model', 'outcome'] as const,
      buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400],
      registers: [registry],
    }),
    batchLastSuccess: new Gauge({
      name: 'triage_batch_last_success_timestamp_seconds',
      help: 'When each schedule last completed a run (unix time)',
      labelNames: ['schedule'] as const,
      registers: [registry],
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
/** The async tier's counters (a subset of Metrics, so workers and routes need no more). */
export type JobMetrics = Pick<
  Metrics,
  | 'jobs'
  | 'decisions'
  | 'overrides'
  | 'escalations'
  | 'callbackAttempts'
  | 'callbackDeadLetters'
  | 'registry'
  | 'jobQueueWait'
  | 'jobDuration'
>;
export type BatchMetrics = Pick<
  Metrics,
  'batchRows' | 'batchRunDuration' | 'batchLastSuccess' | 'batchYield' | 'jobQueueWait' | 'inferenceDuration'
>;

/**
 * Gauges read from Redis at scrape time: queue depth per queue and state, the review backlog and the age of the
 * oldest hold. Shared state, so every replica reports the same figures.
 */
export function registerQueueGauges(
  metrics: Metrics,
  source: {
    jobCounts: () => Promise<Record<string, Record<string, number>>>;
    backlog: () => Promise<number>;
    oldestHeldAt: () => Promise<number | undefined>;
    now: () => number;
  },
): void {
  new Gauge({
    name: 'triage_queue_jobs',
    help: 'BullMQ jobs per queue and state',
    labelNames: ['queue', 'state'] as const,
    registers: [metrics.registry],
    async collect() {
      this.reset();
      // Redis away: these series are absent from this scrape (absent() alerts on them), the rest is still served
      const counts = await source.jobCounts().catch(() => ({}));
      for (const [queue, byState] of Object.entries(counts)) {
        for (const [state, n] of Object.entries(byState)) this.set({ queue, state }, n);
      }
    },
  });
  new Gauge({
    name: 'triage_review_backlog',
    help: 'Results waiting for clinician review',
    registers: [metrics.registry],
    async collect() {
      this.reset();
      const backlog = await source.backlog().catch(() => undefined);
      if (backlog !== undefined) this.set(backlog);
    },
  });
  new Gauge({
    name: 'triage_review_oldest_hold_age_seconds',
    help: 'Age of the oldest result waiting for review (0 when none)',
    registers: [metrics.registry],
    async collect() {
      this.reset();
      const oldest = await source.oldestHeldAt().then(
        (at) => ({ at }),
        () => undefined,
      );
      if (oldest) this.set(oldest.at === undefined ? 0 : Math.max(0, (source.now() - oldest.at) / 1000));
    },
  });
}

/** The circuit breaker of every remote endpoint, read at scrape time: 1 in the state it is in. */
export function registerBreakerGauge(metrics: Metrics, states: () => Record<string, string>): void {
  new Gauge({
    name: 'triage_remote_breaker_state',
    help: 'Circuit breaker state per remote endpoint (closed, open, half_open, isolated): 1 for the current state',
    labelNames: ['endpoint', 'state'] as const,
    registers: [metrics.registry],
    collect() {
      this.reset();
      for (const [endpoint, state] of Object.entries(states())) this.set({ endpoint, state }, 1);
    },
  });
}

/**
 * Memoises a metric's labelled children: prom-client otherwise hashes the label object on every call, which shows on
 * the predict hot path. Label values must be bounded (model names, versions, routes), as they are everywhere here.
 */
export function labelled<L extends string, C>(metric: { labels(labels: Partial<Record<L, string>>): C }) {
  const children = new Map<string, C>();
  return (labels: Record<L, string>): C => {
    const key = Object.values(labels).join('\u0000');
    let child = children.get(key);
    if (!child) {
      child = metric.labels(labels);
      if (children.size < 10_000) children.set(key, child);
    }
    return child;
  };
}
