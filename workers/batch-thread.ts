/**
 * Runs one batch run off the main thread, so scoring a whole file never blocks the gateway's event loop. Its own
 * Redis connection and ONNX session (intra-op threads bounded); reports each committed chunk to the parent.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { Redis } from 'ioredis';
import { executeRun } from '../src/batch/execute.ts';
import { RunStore } from '../src/batch/runs.ts';
import { LocalStorage } from '../src/batch/storage.ts';
import type { LoadedModel } from '../src/registry/load.ts';
import { createRuntimeFactory } from '../src/runtime/factory.ts';

export interface BatchThreadInput {
  module: string;
  runId: string;
  redisUrl: string;
  prefix: string;
  dataDir: string;
  model: LoadedModel;
  version: string;
  onnxThreads: number;
}

export type BatchThreadMessage =
  | { type: 'chunk'; scored: number; failed: number }
  | { type: 'done'; outcome: 'completed' | 'cancelled' }
  | { type: 'error'; message: string };

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
  const versionOf = (id: string) => {
    const v = input.model.manifest.versions.find((x) => x.version === id);
    if (!v) throw new Error(`version ${id} is not in the manifest`);
    return v;
  };
  const runtime = await factory(input.model, versionOf(input.version));
  const shadows = await Promise.all(
    (input.model.manifest.routing.shadow?.versions ?? [])
      .filter((v) => v !== input.version)
      .map(async (version) => ({ version, runtime: await factory(input.model, versionOf(version)) })),
  );
  try {
    const outcome = await executeRun({
      run,
      model: input.model,
      storage: new LocalStorage(input.dataDir),
      runtime,
      runs,
      shadows,
      onChunk: (scored, failed) => port.postMessage({ type: 'chunk', scored, failed } satisfies BatchThreadMessage),
    });
    port.postMessage({ type: 'done', outcome } satisfies BatchThreadMessage);
  } finally {
    await runtime.close();
    await Promise.all(shadows.map((sh) => sh.runtime.close()));
    await factory.close();
  }
} catch (err) {
  port.postMessage({ type: 'error', message: (err as Error).message } satisfies BatchThreadMessage);
} finally {
  redis.disconnect();
}
