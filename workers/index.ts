import type { Logger } from 'pino';
import type { RunStore } from '../src/batch/runs.ts';
import type { ScheduleService } from '../src/batch/schedules.ts';
import type { LocalStorage } from '../src/batch/storage.ts';
import type { CallbackPolicy, Queues } from '../src/jobs/queues.ts';
import type { JobStore } from '../src/jobs/store.ts';
import type { ApiKeyStore } from '../src/platform/auth.ts';
import type { BatchMetrics, JobMetrics } from '../src/platform/metrics.ts';
import type { LoadedModel } from '../src/registry/load.ts';
import type { ShadowRecorder } from '../src/serving/shadow.ts';
import type { RuntimeFactory } from '../src/sync/service.ts';
import { startBatchWorker } from './batch.ts';
import { startCallbackWorker } from './callbacks.ts';
import { startInferenceWorker } from './inference.ts';
import { startMaintenance } from './maintenance.ts';

export const workerKinds = ['inference', 'callbacks', 'maintenance', 'batch'] as const;
export type WorkerKind = (typeof workerKinds)[number];

export interface WorkersDeps {
  kinds: readonly WorkerKind[];
  redisUrl: string;
  prefix: string;
  store: JobStore;
  queues: Queues;
  keys: ApiKeyStore;
  /** the models by name; the caller may swap its entries (a manifest reload), and workers see them from the next job */
  models: Map<string, LoadedModel>;
  runtimeFactory: RuntimeFactory;
  metrics: JobMetrics;
  logger: Logger;
  callbacks: CallbackPolicy;
  concurrency: number;
  /** inference job lock (and stalled-job check interval); default 30 s */
  lockMs?: number;
  maintenanceIntervalMs: number;
  /** the batch tier; required when `kinds` includes batch */
  batch?: {
    runs: RunStore;
    schedules: ScheduleService;
    storage: LocalStorage;
    metrics: BatchMetrics;
    onnxThreads: number;
    missedAfterMs: number;
  };
  now: () => number;
  random?: () => number;
  shadow?: ShadowRecorder;
}

/** Starts the chosen workers in this process (all of them in the single-machine default); `close` stops them. */
export function startWorkers(deps: WorkersDeps) {
  const closers: Array<() => Promise<void>> = [];
  if (deps.kinds.includes('inference')) {
    const w = startInferenceWorker({
      ...deps,
      models: deps.models,
    });
    closers.push(w.close);
  }
  if (deps.kinds.includes('callbacks')) {
    const w = startCallbackWorker({ ...deps, policy: deps.callbacks });
    closers.push(w.close);
  }
  if (deps.kinds.includes('batch')) {
    if (!deps.batch) throw new Error('the batch worker needs its batch dependencies');
    const w = startBatchWorker({
      ...deps.batch,
      redisUrl: deps.redisUrl,
      prefix: deps.prefix,
      models: deps.models,
      logger: deps.logger,
      lockDurationMs: deps.lockMs ?? 30_000,
      now: deps.now,
    });
    closers.push(w.close);
  }
  let maintenance: ReturnType<typeof startMaintenance> | undefined;
  if (deps.kinds.includes('maintenance')) {
    maintenance = startMaintenance({
      ...deps,
      manifests: [...deps.models.values()].map((m) => m.manifest),
      intervalMs: deps.maintenanceIntervalMs,
    });
    closers.push(maintenance.close);
  }
  deps.logger.info({ workers: deps.kinds }, 'workers started');
  return {
    maintenance,
    async close() {
      await Promise.all(closers.map((c) => c()));
    },
  };
}
