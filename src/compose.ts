import type { Logger } from 'pino';
import { createBatchQueue, publishQueuePort, runQueuePort, schedulerPort } from '../workers/batch-queue.ts';
import { callbackSender, createCallbackQueue, enqueueCallback } from '../workers/callbacks.ts';
import { createInferenceQueue, inferenceQueuePort } from '../workers/inference.ts';
import { composeAccountability } from './accountability.ts';
import { Buckets } from './batch/buckets.ts';
import { BatchReviewService } from './batch/review.ts';
import { RunHoldStore } from './batch/review-store.ts';
import { RunStore } from './batch/runs.ts';
import { ScheduleService } from './batch/schedules.ts';
import { BatchService } from './batch/service.ts';
import { LocalStorage } from './batch/storage.ts';
import { DeadLetters } from './callbacks/dead-letters.ts';
import { Outbox } from './callbacks/outbox.ts';
import { DeadLetterService } from './callbacks/replay.ts';
import { BulkExports } from './ingress/bulk-export.ts';
import { ReviewService } from './jobs/reviews.ts';
import { JobService } from './jobs/service.ts';
import { JobStore } from './jobs/store.ts';
import { AuditLog } from './platform/audit.ts';
import type { ApiKeyStore } from './platform/auth.ts';
import type { Config } from './platform/config.ts';
import { KeySpace } from './platform/keyspace.ts';
import { createMetrics, type Metrics, registerBreakerGauge, registerQueueGauges } from './platform/metrics.ts';
import type { Pressure } from './platform/pressure.ts';
import { connectRedis } from './platform/redis.ts';
import type { LoadedModel } from './registry/load.ts';
import { ManifestReloads } from './releases/reload.ts';
import { BreakerRegistry } from './runtime/breakers.ts';
import { observedRuntimeFactory } from './runtime/observed.ts';
import { ModelCatalog } from './serving/catalog.ts';
import { JobRunners, type RuntimeFactory } from './serving/runners.ts';
import { Scorer } from './serving/scorer.ts';
import { ShadowRecorder } from './serving/shadow.ts';
import { ShadowThread } from './serving/shadow-offload.ts';
import { MAX_SHADOW_IN_FLIGHT } from './serving/shadow-runner.ts';

export type ServicesConfig = Pick<
  Config,
  | 'redisPrefix'
  | 'workerShards'
  | 'onnxThreads'
  | 'workerConcurrency'
  | 'callbacks'
  | 'maintenanceIntervalMs'
  | 'dataDir'
  | 'batchMissedAfterMs'
> &
  Partial<
    Pick<
      Config,
      | 'redisReplicaAcks'
      | 'workerLockMs'
      | 'fhirServers'
      | 'hl7'
      | 'suspendedRecheckMs'
      | 'monitoring'
      | 'batchNice'
      | 'shadowNice'
      | 'redisCommandTimeoutMs'
      | 'objectStores'
      | 'signedUrlSeconds'
    >
  >;

export interface ServicesOptions {
  config: ServicesConfig;
  logger: Logger;
  redisUrl: string;
  keys: ApiKeyStore;
  models: LoadedModel[];
  metrics?: Metrics;
  /** tests: one factory for every tier (the real one makes remote calls with a request's or a job's budget) */
  runtimeFactory?: RuntimeFactory;
  now?: () => number;
  random?: () => number;
  /** how often changes made through other processes (routing, models' shards) are picked up */
  routingRefreshMs?: number;
  /** the gateway's event-loop pressure: in its process, deferrable work yields to bedside traffic */
  pressure?: Pressure;
  /** re-reads the manifests (enables reloads: the admin endpoint, SIGHUP, a model another process added) */
  reloadModels?: () => Promise<LoadedModel[]>;
}

/**
 * The one composition root: config → Redis → catalog → stores, queues, scorer and services, with one ordered
 * shutdown. The gateway adds the sync tier and the HTTP app (`composeGateway`); `workers/main.ts` adds workers.
 */
export async function composeServices(options: ServicesOptions) {
  const { config, logger } = options;
  const prefix = config.redisPrefix;
  const now = options.now ?? Date.now;
  const metrics = options.metrics ?? createMetrics();
  // checked before anything is connected
  const fhirServers = BulkExports.servers(config.fhirServers);
  const buckets = Buckets.from(config.objectStores);
  const redis = await connectRedis(options.redisUrl, logger, config.redisCommandTimeoutMs);

  // model shards: each model's jobs, queues, outbox and audit entries under its own hash tag (src/platform/keyspace.ts)
  const keys = await KeySpace.open(
    redis,
    prefix,
    options.models.map((m) => m.manifest.name),
  );
  const audit = new AuditLog(redis, keys);
  const outbox = new Outbox(redis, keys);
  const deadLetters = new DeadLetters(redis, keys);
  const store = new JobStore(redis, keys, { audit, outbox, replicaAcks: config.redisReplicaAcks ?? 0 });
  const runs = new RunStore(redis, keys);
  const queues = {
    inference: createInferenceQueue(redis, keys, logger),
    callbacks: createCallbackQueue(redis, keys, logger),
    batch: createBatchQueue(redis, keys, logger),
  };
  const catalog = await ModelCatalog.open({
    redis,
    prefix,
    models: options.models,
    logger,
    ...(options.random ? { random: options.random } : {}),
  });
  const refreshMs = options.routingRefreshMs ?? 1000;
  catalog.follow(refreshMs);
  // a model a reload added in another process: its records are found by id here, its shard workers start (workers/)
  const shardRefresh = setInterval(() => {
    keys.refresh(redis).then(
      (learned) => learned.length > 0 && logger.info({ models: learned }, 'model shards announced elsewhere'),
      (err: Error) => logger.warn({ err: { message: err.message } }, 'model shards refresh failed'),
    );
  }, refreshMs);
  shardRefresh.unref();
  const shadow = new ShadowRecorder(redis, keys, metrics, logger);
  // in-process ONNX shadows score in a low-priority thread, off the event loop bedside answers wait on; a tier's
  // injected runtimes (tests) cannot cross into a thread, so with them shadows score through the tier's runners
  const shadowThread = options.runtimeFactory
    ? undefined
    : new ShadowThread({
        nice: config.shadowNice ?? 10,
        onnxThreads: config.onnxThreads,
        maxInFlight: MAX_SHADOW_IN_FLIGHT,
        logger,
      });
  // threshold governance, and the monitoring and outcome taps every scorer of this process gets
  const accountability = composeAccountability({
    redis,
    keys,
    config,
    catalog,
    audit,
    records: { jobs: store, runs },
    metrics,
    logger,
    now,
  });
  const { monitoring, observers } = accountability;
  // a model a reload adds has its shard recorded before it serves (after the governance checks, which may refuse it):
  // other processes find its records by id and start its workers
  catalog.onReload((next) =>
    keys.announce(
      redis,
      next.map((m) => m.name),
    ),
  );
  // one breaker per remote endpoint for the whole process: bedside requests and jobs see the same endpoint health
  const breakers = new BreakerRegistry();
  registerBreakerGauge(metrics, () => breakers.states());
  // jobs (async and batch) have no one waiting at a bedside: remote calls get a job's budget
  const jobFactory = options.runtimeFactory
    ? undefined
    : observedRuntimeFactory({ onnxThreads: config.onnxThreads, metrics, logger, breakers, caller: 'job' });
  // the async tier's concurrent jobs share in-process ONNX runs (JobRunners' `coalesce`)
  const jobRunners = new JobRunners(
    options.runtimeFactory ?? (jobFactory as RuntimeFactory),
    'async',
    (l, s, ok) => metrics.inferenceDuration.observe({ ...l, status: ok ? 'ok' : 'error' }, s),
    { coalesce: true },
  );
  const jobScorer = new Scorer({
    catalog,
    runners: jobRunners,
    shadow,
    ...(shadowThread ? { shadowThread } : {}),
    metrics,
    ...(options.pressure ? { pressure: options.pressure } : {}),
    observers,
    ...(options.random ? { random: options.random } : {}),
  });
  const callbacks = callbackSender(queues.callbacks, outbox, config.callbacks);
  const storage = new LocalStorage(config.dataDir);
  const bulkExports = new BulkExports(fhirServers, redis, prefix, now);
  const services = {
    redis,
    keyspace: keys,
    metrics,
    logger,
    breakers,
    pressure: options.pressure,
    catalog,
    shadow,
    shadowThread,
    monitoring,
    observers,
    thresholdChanges: accountability.thresholdChanges,
    outcomes: accountability.outcomes,
    audit,
    outbox,
    deadLetters,
    store,
    runs,
    queues,
    storage,
    buckets,
    bulkExports,
    jobScorer,
    callbacks,
    keys: options.keys,
    jobs: new JobService({
      store,
      queue: inferenceQueuePort(queues.inference),
      callbackHttpHosts: config.callbacks.httpHosts,
      metrics,
      now,
    }),
    reviews: new ReviewService({
      store,
      callbacks,
      metrics,
      now,
      onDecision: (model, version, decision) => monitoring.recordDecision(model, version, decision),
    }),
    deadLetterService: new DeadLetterService(deadLetters, audit, (letter, replay) =>
      enqueueCallback(queues.callbacks, config.callbacks, letter, replay),
    ),
    schedules: new ScheduleService(redis, prefix, schedulerPort(queues.batch), audit),
    batches: new BatchService(
      runs,
      runQueuePort(queues.batch),
      storage,
      audit,
      bulkExports,
      buckets,
      config.signedUrlSeconds,
    ),
    batchReviews: new BatchReviewService({
      store: new RunHoldStore(redis, keys, audit),
      runs,
      storage,
      now,
      onDecision: (model, version, decision) => monitoring.recordDecision(model, version, decision),
      publish: publishQueuePort(queues.batch),
      logger,
    }),
    now,
    random: options.random,
    /** governed, audited manifest reloads (when this process can re-read its manifests) */
    reload: options.reloadModels
      ? new ManifestReloads({ catalog, audit, load: options.reloadModels }).reload
      : undefined,
    config,
    /** how often changes made through other processes are picked up */
    refreshMs,
    redisUrl: options.redisUrl,
    /** closes queues, runtimes and Redis (workers and the app are closed by whoever started them, first) */
    async close() {
      clearInterval(shardRefresh);
      catalog.close();
      await shadowThread?.close();
      await shadow.close();
      await accountability.close();
      await Promise.all(Object.values(queues).map((q) => q.close()));
      await jobRunners.close();
      await jobFactory?.close();
      buckets.close();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
  registerQueueGauges(metrics, {
    jobCounts: async () => ({
      inference: await queues.inference.getJobCounts(),
      callbacks: await queues.callbacks.getJobCounts(),
      batch: await queues.batch.getJobCounts(),
    }),
    backlog: () => store.pendingCount(),
    oldestHeldAt: () => store.oldestPending(),
    now,
  });
  return services;
}

export type Services = Awaited<ReturnType<typeof composeServices>>;
