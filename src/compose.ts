import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { startWorkers, type WorkerKind } from '../workers/index.ts';
import { createApp } from './app.ts';
import { RunStore } from './batch/runs.ts';
import { ScheduleService, syncManifestSchedules } from './batch/schedules.ts';
import { BatchService } from './batch/service.ts';
import { LocalStorage } from './batch/storage.ts';
import type { AppDeps } from './context.ts';
import { AdminService } from './jobs/admin.ts';
import { createQueues } from './jobs/queues.ts';
import { JobService } from './jobs/service.ts';
import { JobStore } from './jobs/store.ts';
import type { ApiKeyStore } from './platform/auth.ts';
import type { Config } from './platform/config.ts';
import { createMetrics, type Metrics, registerQueueGauges } from './platform/metrics.ts';
import type { LoadedModel } from './registry/load.ts';
import { ReleaseService } from './releases/service.ts';
import { createRuntimeFactory } from './runtime/factory.ts';
import { ShadowRecorder } from './serving/shadow.ts';
import { ModelService, type RuntimeFactory } from './sync/service.ts';

export type GatewayConfig = Pick<
  Config,
  | 'redisPrefix'
  | 'maxBodyBytes'
  | 'openOpsEndpoints'
  | 'accessLog'
  | 'warmupRuns'
  | 'warmupPolicy'
  | 'onnxThreads'
  | 'workerConcurrency'
  | 'callbacks'
  | 'maintenanceIntervalMs'
  | 'dataDir'
  | 'batchMissedAfterMs'
> &
  Partial<Pick<Config, 'workerLockMs'>> & { workers: readonly WorkerKind[] };

export interface ComposeOptions {
  config: GatewayConfig;
  logger: Logger;
  redisUrl: string;
  keys: ApiKeyStore;
  models: LoadedModel[];
  metrics?: Metrics;
  runtimeFactory?: RuntimeFactory;
  now?: () => number;
  random?: () => number;
  /** how often routing changes made through other replicas are picked up */
  routingRefreshMs?: number;
  /** re-reads the manifests (enables POST /v1/admin/reload and SIGHUP) */
  reloadModels?: () => Promise<LoadedModel[]>;
}

/**
 * The composition root: connects Redis, warms the models, wires the services, the app and (optionally) the workers.
 * `main()` and the tests both build the gateway through it, so what is tested is what runs.
 */
export async function composeGateway(options: ComposeOptions) {
  const { config, logger } = options;
  const now = options.now ?? Date.now;
  const metrics = options.metrics ?? createMetrics();
  const cloudFactory = options.runtimeFactory ? undefined : remoteAwareFactory(config.onnxThreads, metrics, logger);
  const runtimeFactory = options.runtimeFactory ?? (cloudFactory as RuntimeFactory);
  // workers run jobs: remote calls get the job's budget, not a bedside request's
  const jobFactory = options.runtimeFactory
    ? undefined
    : remoteAwareFactory(config.onnxThreads, metrics, logger, 'job');

  // auto-pipelining sends the commands of concurrent requests in one write (many small writes were a hot spot)
  const redis = new Redis(options.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1, enableAutoPipelining: true });
  redis.on('error', (err) => logger.warn({ err: { message: err.message } }, 'redis connection error'));
  await redis.connect();
  const store = new JobStore(redis, config.redisPrefix);
  const queues = createQueues(redis, config.redisPrefix);

  const workerModels = new Map(options.models.map((m) => [m.manifest.name, m]));
  const shadow = new ShadowRecorder(redis, config.redisPrefix, metrics, logger);
  const models = await ModelService.start(options.models, {
    metrics,
    logger,
    runtimeFactory,
    warmupRuns: config.warmupRuns,
    warmupPolicy: config.warmupPolicy,
    shadow,
    ...(options.random ? { random: options.random } : {}),
  });
  const releases = new ReleaseService(redis, config.redisPrefix, models, store, logger);
  await releases.follow(options.routingRefreshMs ?? 2000);
  const runs = new RunStore(redis, config.redisPrefix);
  const schedules = new ScheduleService(redis, config.redisPrefix, store);
  const storage = new LocalStorage(config.dataDir);
  const batches = new BatchService(runs, schedules.queue, storage, store);
  await syncManifestSchedules(
    schedules,
    options.models.map((m) => m.manifest),
  );
  const jobs = new JobService({ store, queues, redis, callbacks: config.callbacks, metrics, now });
  const admin = new AdminService(store, queues, config.callbacks);
  registerQueueGauges(metrics, {
    jobCounts: async () => ({
      inference: await queues.inference.getJobCounts(),
      callbacks: await queues.callbacks.getJobCounts(),
      batch: await schedules.queue.getJobCounts(),
    }),
    backlog: () => store.pendingCount(),
    oldestHeldAt: () => store.oldestPending(),
    now,
  });

  const deps: AppDeps = {
    models,
    jobs,
    admin,
    batches,
    schedules,
    releases,
    shadow,
    ...(options.reloadModels
      ? {
          reload: async () => {
            const loaded = await (options.reloadModels as () => Promise<LoadedModel[]>)();
            await models.reload(loaded, await releases.overrides(loaded.map((m) => m.manifest)));
            replaceModels(workerModels, loaded); // the in-process workers take them from their next job
            await releases.refresh();
            return models.list().map((m) => `${m.manifest.name}@${m.version}`);
          },
        }
      : {}),
    keys: options.keys,
    metrics,
    logger,
    redisReady: async () => (await redis.ping()) === 'PONG',
    options: {
      maxBodyBytes: config.maxBodyBytes,
      openOpsEndpoints: config.openOpsEndpoints,
      accessLog: config.accessLog,
    },
  };
  const app = createApp(deps);
  const workers =
    config.workers.length > 0
      ? startWorkers({
          kinds: config.workers,
          redisUrl: options.redisUrl,
          prefix: config.redisPrefix,
          store,
          queues,
          keys: options.keys,
          models: workerModels,
          runtimeFactory: options.runtimeFactory ?? (jobFactory as RuntimeFactory),
          metrics,
          logger,
          callbacks: config.callbacks,
          concurrency: config.workerConcurrency,
          ...(config.workerLockMs !== undefined ? { lockMs: config.workerLockMs } : {}),
          maintenanceIntervalMs: config.maintenanceIntervalMs,
          batch: {
            runs,
            schedules,
            storage,
            metrics,
            onnxThreads: config.onnxThreads,
            missedAfterMs: config.batchMissedAfterMs,
          },
          now,
          ...(options.random ? { random: options.random } : {}),
          shadow,
        })
      : undefined;

  return {
    app,
    deps,
    store,
    queues,
    redis,
    runs,
    schedules,
    workers,
    metrics,
    /** closes workers, queues, models and Redis, in that order */
    async close() {
      releases.close();
      await workers?.close();
      await shadow.close();
      await queues.close();
      await schedules.close();
      await models.close();
      await cloudFactory?.close();
      await jobFactory?.close();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}

export type Gateway = Awaited<ReturnType<typeof composeGateway>>;

/** The runtime factory of a real process: ONNX in-process, SageMaker and Vertex AI behind resilience, with metrics. */
export function remoteAwareFactory(
  onnxThreads: number,
  metrics: Metrics,
  logger: Logger,
  caller: 'request' | 'job' = 'request',
) {
  return createRuntimeFactory({
    onnxThreads,
    caller,
    onEvent: (event) => {
      metrics.remoteEvents.inc({ model: event.model, version: event.version, event: event.type });
      if (event.type === 'breaker' || event.type === 'give_up') {
        logger.warn(
          {
            model: event.model,
            version: event.version,
            endpoint: event.name,
            event: event.type,
            ...('state' in event ? { state: event.state } : {}),
          },
          'remote endpoint',
        );
      }
    },
  });
}

/** Swaps a workers' model map to freshly loaded manifests, in place (the workers hold the map). */
export function replaceModels(target: Map<string, LoadedModel>, loaded: readonly LoadedModel[]): void {
  target.clear();
  for (const m of loaded) target.set(m.manifest.name, m);
}
