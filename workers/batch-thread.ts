/**
 * Runs one batch run off the main thread, so scoring a whole file never blocks the gateway's event loop. Its own
 * Redis connection and runtimes (intra-op threads bounded), and the one scorer over a catalog fixed at the routing
 * the parent chose for the run; reports each committed chunk to the parent.
 */

import { setTimeout as sleep } from 'node:timers/promises';
import { parentPort, workerData } from 'node:worker_threads';
import { executeRun } from '../src/batch/execute.ts';
import { InputFileError } from '../src/batch/readers.ts';
import { RunStore } from '../src/batch/runs.ts';
import { type BatchStorage, isObjectUrl, LocalStorage, StorageError } from '../src/batch/storage.ts';
import { MonitoringRecorder } from '../src/monitoring/recorder.ts';
import { PredictionLog } from '../src/outcomes/prediction-log.ts';
import { Problem } from '../src/platform/errors.ts';
import { KeySpace } from '../src/platform/keyspace.ts';
import { lowerThreadPriority, pressureReader } from '../src/platform/pressure.ts';
import { newRedis } from '../src/platform/redis.ts';
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
  /** TRIAGE_OBJECT_STORES: inputs named `s3://…` or `gs://…` are read from their bucket */
  objectStores?: string;
  model: LoadedModel;
  /** the routing in force when the run started: its shadows score beside it */
  routing: RoutingState;
  onnxThreads: number;
  /** this thread's nice value: its scoring (and the ONNX threads it makes) yields the cores to bedside work */
  nice: number;
  chunkTimeoutMs: number;
  /** the parent's event-loop pressure (see src/platform/pressure.ts): chunks wait while its loop is busier than this */
  pressure?: { buffer: SharedArrayBuffer; maxUtilization: number };
  /** a FHIR export's staged files (src/ingress/), read instead of the run's input path */
  exportFiles?: string[];
  /** record monitoring aggregates (written to the shared Redis buckets like every replica's) */
  monitoring: boolean;
}

export type BatchThreadMessage =
  | { type: 'chunk'; scored: number; failed: number; pausedMs: number; scoringMs: number }
  | { type: 'done'; outcome: 'completed' | 'cancelled' | 'suspended' }
  | { type: 'error'; message: string; permanent?: boolean };

const input = workerData as BatchThreadInput;
/** rows of the prediction log the thread holds before writing them (about a chunk) */
const PREDICTION_LOG_BATCH_ROWS = 1000;
/** how long, ms, the chunk being committed waited for bedside traffic, and how long it took to score */
let pausedMs = 0;
let scoringMs = 0;

/**
 * Waits while the gateway's event loop is busy answering bedside requests, at most a second per chunk so a run always
 * progresses. Busy, not delayed: a loop delayed while it idles is a machine busy with other processes, which the
 * thread's nice value already yields to; pausing would cost the run its throughput and give the bedside nothing.
 */
function yieldToBedside(pressure: NonNullable<BatchThreadInput['pressure']>): () => Promise<void> {
  const read = pressureReader(pressure.buffer);
  const busy = () => read.utilization() > pressure.maxUtilization;
  return async () => {
    if (!busy()) return;
    const started = performance.now();
    do await sleep(20);
    while (busy() && performance.now() - started < 1000);
    pausedMs += performance.now() - started;
  };
}
/**
 * The run's storage: its data directory, and the buckets when the deployment has some or the run reads one. The
 * bucket SDKs take seconds to load in a fresh thread, a start-up every run would pay for nothing.
 */
async function runStorage(inputPath: string): Promise<BatchStorage> {
  const local = new LocalStorage(input.dataDir);
  if (!input.objectStores && !isObjectUrl(inputPath)) return local;
  const { Buckets, withBuckets } = await import('../src/batch/buckets.ts');
  return withBuckets(local, Buckets.from(input.objectStores));
}

const port = parentPort;
if (!port) throw new Error('batch-thread must run in a worker thread');
// before the runtimes exist, so the intra-op threads ONNX makes for this run inherit it (session.run itself runs on
// this thread)
lowerThreadPriority(input.nice);

const redis = newRedis(input.redisUrl, { maxRetriesPerRequest: 3 });
try {
  const runs = new RunStore(redis, new KeySpace(input.prefix, [input.model.manifest.name]));
  const run = await runs.get(input.runId);
  if (!run) throw new Error(`run ${input.runId} not found`);
  // the same factory as the gateway: ONNX in-process, or a cloud endpoint behind timeouts, retries and a breaker
  // (bounded by the model's async timeout, as a batch has no caller waiting on one row)
  const factory = createRuntimeFactory({ onnxThreads: input.onnxThreads, caller: 'job' });
  const name = input.model.manifest.name;
  // the routing is the run's; suspensions are followed, so the kill switch stops the run between chunks
  const catalog = ModelCatalog.fixed([input.model], { [name]: input.routing }, { redis, prefix: input.prefix });
  await catalog.refresh();
  catalog.follow(1000);
  const runners = new JobRunners(factory, 'batch');
  // the thread has its own Redis connection, so it flushes its own aggregates: no protocol to the parent needed
  const keys = new KeySpace(input.prefix); // the taps write in the run's model's shard
  const recorder = input.monitoring ? new MonitoringRecorder({ redis, keys }) : undefined;
  // written as the chunks score, not held for the second the gateway's log waits: a chunk's rows then die young
  const predictionLog = input.monitoring
    ? new PredictionLog({ redis, keys, maxBufferedRows: PREDICTION_LOG_BATCH_ROWS })
    : undefined;
  try {
    const outcome = await executeRun({
      run,
      model: catalog.get(name) as NonNullable<ReturnType<ModelCatalog['get']>>,
      // the scorer's observers: chunk timing (the parent reports it as inference on the batch tier), monitoring and
      // the prediction log (outcomes by batch row)
      scorer: new Scorer({
        catalog,
        runners,
        observers: [
          {
            onScore: (e) => {
              scoringMs += e.ms;
            },
          },
          ...(recorder && predictionLog ? [recorder, predictionLog] : []),
        ],
      }),
      storage: await runStorage(run.input.path),
      runs,
      chunkTimeoutMs: input.chunkTimeoutMs,
      ...(input.exportFiles ? { exportFiles: input.exportFiles } : {}),
      onChunk: (scored, failed) => {
        port.postMessage({ type: 'chunk', scored, failed, pausedMs, scoringMs } satisfies BatchThreadMessage);
        pausedMs = 0;
        scoringMs = 0;
      },
      ...(input.pressure ? { beforeChunk: yieldToBedside(input.pressure) } : {}),
    });
    port.postMessage({ type: 'done', outcome } satisfies BatchThreadMessage);
  } catch (err) {
    // committed chunks stay committed: the run resumes from its checkpoint once the model is resumed
    if (!(err instanceof Problem && err.code === 'model_suspended')) throw err;
    port.postMessage({ type: 'done', outcome: 'suspended' } satisfies BatchThreadMessage);
  } finally {
    await recorder?.close();
    await predictionLog?.close();
    catalog.close();
    await runners.close();
    await factory.close();
  }
} catch (err) {
  // a malformed input fails the same way on every attempt: the parent fails the run at once
  // and so does an input that is not there or not the caller's (an object deleted after the run was accepted)
  const permanent = err instanceof InputFileError || (err instanceof StorageError && err.reason !== 'unreadable');
  port.postMessage({ type: 'error', message: (err as Error).message, permanent } satisfies BatchThreadMessage);
} finally {
  redis.disconnect();
}
