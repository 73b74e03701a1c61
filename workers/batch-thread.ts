/**
 * Runs one batch run off the main thread, so scoring a whole file never blocks the gateway's event loop. Its own
 * Redis connection and runtimes (intra-op threads bounded), and the one scorer over a catalog fixed at the routing
 * the parent chose for the run; reports each committed chunk to the parent.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Redis } from 'ioredis';
import { executeRun } from '../src/batch/execute.ts';
import { InputFileError } from '../src/batch/readers.ts';
import { RunStore } from '../src/batch/runs.ts';
import { LocalStorage } from '../src/batch/storage.ts';
import type { LoadedModel } from '../src/registry/load.ts';
import { createRuntimeFactory } from '../src/runtime/factory.ts';
import { ModelCatalog } from '../src/serving/catalog.ts';
import type { RoutingState } from '../src/serving/routing.ts';
import { JobRunners } from '../src/serving/runners.ts';
import { Scorer } from '../src/serving/scorer.ts';

export interface BatchThreadInput {
  module: string;
  runId: string;
  redisUrl: string;
  prefix: string;
  dataDir: string;
  model: LoadedModel;
  /** the routing in force when the run started: its shadows score beside it */
  routing: RoutingState;
  onnxThreads: number;
  chunkTimeoutMs: number;
}

export type BatchThreadMessage =
  | { type: 'chunk'; scored: number; failed: number }
  | { type: 'done'; outcome: 'completed' | 'cancelled' }
  | { type: 'error'; message: string; permanent?: boolean };

const input = workerData as BatchThreadInput;
const port = parentPort;
if (!port) throw new Error('batch-thread must run in a worker thread');

const redis = new Redis(input.redisUrl, { maxRetriesPerRequest: 3 });
try {
  const runs = new RunStore(redis, input.prefix);
  const run = await runs.get(input.runId);
  if (!run) throw new Error(`run ${input.runId} not found`);
  // the same factory as the gateway: ONNX in-process, or a cloud endpoint behind timeouts, retries and a breaker
  // (bounded by the model's async timeout, as a batch has no caller waiting on one row)
  const factory = createRuntimeFactory({ onnxThreads: input.onnxThreads, caller: 'job' });
  const name = input.model.manifest.name;
  const catalog = ModelCatalog.fixed([input.model], { [name]: input.routing });
  const runners = new JobRunners(factory, 'batch');
  try {
    const outcome = await executeRun({
      run,
      model: catalog.get(name) as NonNullable<ReturnType<ModelCatalog['get']>>,
      scorer: new Scorer({ catalog, runners }),
      storage: new LocalStorage(input.dataDir),
      runs,
      chunkTimeoutMs: input.chunkTimeoutMs,
      onChunk: (scored, failed) => port.postMessage({ type: 'chunk', scored, failed } satisfies BatchThreadMessage),
    });
    port.postMessage({ type: 'done', outcome } satisfies BatchThreadMessage);
  } finally {
    await runners.close();
    await factory.close();
  }
} catch (err) {
  // a malformed input fails the same way on every attempt: the parent fails the run at once
  const permanent = err instanceof InputFileError;
  port.postMessage({ type: 'error', message: (err as Error).message, permanent } satisfies BatchThreadMessage);
} finally {
  redis.disconnect();
}
