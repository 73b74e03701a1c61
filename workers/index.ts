import type { Logger } from 'pino';
import type { ApiKeyStore } from '../src/auth.ts';
import type { CallbackPolicy, Queues } from '../src/jobs/queues.ts';
import type { JobStore } from '../src/jobs/store.ts';
import type { JobMetrics } from '../src/metrics.ts';
import type { LoadedModel } from '../src/registry/load.ts';
import type { RuntimeFactory } from '../src/serving.ts';
import { startCallbackWorker } from './callbacks.ts';
import { startInferenceWorker } from './inference.ts';
import { startMaintenance } from './maintenance.ts';

export const workerKinds = ['inference', 'callbacks', 'maintenance'] as const;
export type WorkerKind = (typeof workerKinds)[number];

export interface WorkersDeps {
  kinds: readonly WorkerKind[];
  redisUrl: string;
  prefix: string;
  store: JobStore;
  queues: Queues;
  keys: ApiKeyStore;
  models: readonly LoadedModel[];
  runtimeFactory: RuntimeFactory;
  metrics: JobMetrics;
  logger: Logger;
  callbacks: CallbackPolicy;
  concurrency: number;
  maintenanceIntervalMs: number;
  now: () => number;
  random?: () => number;
}

/** Starts the chosen workers in this process (all of them in the single-machine default); `close` stops them. */
export function startWorkers(deps: WorkersDeps) {
  const closers: Array<() => Promise<void>> = [];
  if (deps.kinds.includes('inference')) {
    const w = startInferenceWorker({
      ...deps,
      models: new Map(deps.models.map((m) => [m.manifest.name, m])),
    });
    closers.push(w.close);
  }
  if (deps.kinds.includes('callbacks')) {
    const w = startCallbackWorker({ ...deps, policy: deps.callbacks });
    closers.push(w.close);
  }
  let maintenance: ReturnType<typeof startMaintenance> | undefined;
  if (deps.kinds.includes('maintenance')) {
    maintenance = startMaintenance({
      ...deps,
      manifests: deps.models.map((m) => m.manifest),
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
