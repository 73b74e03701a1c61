import type { Logger } from 'pino';
import type { Services } from '../src/compose.ts';
import type { Config } from '../src/platform/config.ts';
import type { Pressure } from '../src/platform/pressure.ts';
import { batchThreadsFor, startBatchWorker } from './batch.ts';
import type { BatchThreads } from './batch-thread-run.ts';
import { startCallbackWorker } from './callbacks.ts';
import { startInferenceWorker } from './inference.ts';
import { startMaintenance } from './maintenance.ts';
import type { RunningWorker } from './ops.ts';
import { followShards } from './shards.ts';

export const workerKinds = ['inference', 'callbacks', 'maintenance', 'batch'] as const;
export type WorkerKind = (typeof workerKinds)[number];

/** the models whose shards this process consumes: the ones named (TRIAGE_WORKER_SHARDS), else every model it loaded */
function servedShards(s: Services): string[] {
  return s.config.workerShards.length > 0 ? s.config.workerShards : s.keyspace.shards().map((x) => x.model);
}

/** The batch worker's settings, from the process's services and config. */
function batchWorkerDeps(s: Services) {
  const { config, logger, metrics } = s;
  return {
    redisUrl: s.redisUrl,
    prefix: config.redisPrefix,
    keys: s.keyspace,
    shards: servedShards(s).map((model) => s.keyspace.shard(model)),
    runs: s.runs,
    schedules: s.schedules,
    storage: s.storage,
    buckets: s.buckets,
    objectStores: config.objectStores,
    bulkExports: s.bulkExports,
    reviews: s.batchReviews,
    audit: s.audit,
    catalog: s.catalog,
    metrics,
    logger,
    onnxThreads: config.onnxThreads,
    ...(config.batchNice !== undefined ? { batchNice: config.batchNice } : {}),
    missedAfterMs: config.batchMissedAfterMs,
    lockDurationMs: config.workerLockMs ?? 30_000,
    ...(config.suspendedRecheckMs !== undefined ? { suspendedRecheckMs: config.suspendedRecheckMs } : {}),
    monitoring: config.monitoring !== false,
    now: s.now,
    ...(s.pressure ? { pressure: s.pressure } : {}),
  };
}

/**
 * The batch worker's warm threads, started ahead of the workers: a process starts them first thing, so they load while
 * it loads its models and warms up (at their nice value, behind bedside work) and its first run finds one ready.
 */
export function startBatchThreads(
  config: Pick<Config, 'redisPrefix' | 'dataDir' | 'onnxThreads'> &
    Partial<Pick<Config, 'objectStores' | 'batchNice' | 'monitoring'>>,
  redisUrl: string,
  logger: Logger,
  pressure?: Pressure,
): BatchThreads {
  return batchThreadsFor({
    redisUrl,
    prefix: config.redisPrefix,
    dataDir: config.dataDir,
    ...(config.objectStores ? { objectStores: config.objectStores } : {}),
    onnxThreads: config.onnxThreads,
    ...(config.batchNice !== undefined ? { batchNice: config.batchNice } : {}),
    monitoring: config.monitoring !== false,
    logger,
    ...(pressure ? { pressure } : {}),
  });
}

/** Starts the chosen workers in this process (all of them in the single-machine default); `close` stops them. */
export function startWorkers(kinds: readonly WorkerKind[], s: Services, started: { batchThreads?: BatchThreads } = {}) {
  const { config, logger, metrics } = s;
  const served = servedShards(s);
  const shards = { redisUrl: s.redisUrl, shards: served.map((model) => s.keyspace.shard(model)) };
  const closers: Array<() => Promise<void>> = [];
  const running: RunningWorker[] = [];
  /** the per-shard worker sets (inference, callbacks): a shard added later gets a worker in each */
  const perShard: Array<{ add(prefix: string): boolean }> = [];
  let batchThreads: BatchThreads | undefined;
  if (kinds.includes('inference')) {
    const w = startInferenceWorker({
      ...shards,
      store: s.store,
      catalog: s.catalog,
      scorer: s.jobScorer,
      callbacks: s.callbacks,
      metrics,
      logger,
      now: s.now,
      ...(s.random ? { random: s.random } : {}),
      concurrency: config.workerConcurrency,
      ...(config.workerLockMs !== undefined ? { lockMs: config.workerLockMs } : {}),
      ...(config.suspendedRecheckMs !== undefined ? { suspendedRecheckMs: config.suspendedRecheckMs } : {}),
    });
    // in the gateway's process, async jobs wait while bedside traffic needs the event loop (a job's budget is minutes)
    s.pressure?.onChange((busy) => {
      const change = busy ? w.worker.pause(true) : Promise.resolve(w.worker.resume());
      change.catch((err: Error) => logger.warn({ err: { message: err.message } }, 'inference worker pause failed'));
    });
    closers.push(w.close);
    running.push(w.worker);
    perShard.push(w.worker);
  }
  if (kinds.includes('callbacks')) {
    const w = startCallbackWorker({
      ...shards,
      store: s.store,
      deadLetters: s.deadLetters,
      keys: s.keys,
      metrics,
      logger,
      policy: config.callbacks,
      concurrency: config.workerConcurrency,
    });
    closers.push(w.close);
    running.push(w.worker);
    perShard.push(w.worker);
  }
  if (kinds.includes('batch')) {
    const w = startBatchWorker({
      ...batchWorkerDeps(s),
      threads: started.batchThreads ?? startBatchThreads(s.config, s.redisUrl, s.logger, s.pressure),
    });
    batchThreads = w.threads;
    closers.push(w.close);
    running.push(w.worker);
  }
  let maintenance: ReturnType<typeof startMaintenance> | undefined;
  if (kinds.includes('maintenance')) {
    maintenance = startMaintenance({
      store: s.store,
      outbox: s.outbox,
      callbacks: s.callbacks,
      batchReviews: s.batchReviews,
      catalog: s.catalog,
      metrics,
      logger,
      intervalMs: config.maintenanceIntervalMs,
      now: s.now,
    });
    closers.push(maintenance.close);
  }
  // a model added by a reload (here or in another process) gets its shard workers without a restart, unless this
  // process was told its shards
  // a model added by a reload (here or in another process) gets its shard workers without a restart, unless this
  // process was told its shards
  const reload = s.reload;
  const follow =
    perShard.length > 0 && config.workerShards.length === 0
      ? followShards({
          keys: s.keyspace,
          catalog: s.catalog,
          served,
          start: (model) => {
            for (const set of perShard) set.add(s.keyspace.shard(model));
          },
          ...(reload ? { reload: () => reload({ id: 'shards:announced', role: 'system' }) } : {}),
          everyMs: s.refreshMs,
          logger,
        })
      : undefined;
  logger.info({ workers: kinds }, 'workers started');
  return {
    maintenance,
    /** the look for shards added since start (absent when the shards are named) */
    shards: follow,
    /** the batch worker's warm threads (absent without a batch worker) */
    batchThreads,
    /** the BullMQ workers started here (what a worker process's /healthz checks) */
    workers: running as readonly RunningWorker[],
    async close() {
      // first: no shard worker starts while the others close
      await follow?.close();
      await Promise.all(closers.map((c) => c()));
    },
  };
}
