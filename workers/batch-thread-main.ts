/**
 * The work of a batch thread (workers/batch-thread.ts loads it once the thread's priority is lowered): one run after
 * another, each over the one scorer with a catalog fixed at the routing the parent chose for it, each committed chunk
 * reported to the parent. What a fresh thread per run paid for on every run is kept: the Redis connection, the
 * runtime factory, the runners (sessions) per model.
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
import { pressureReader } from '../src/platform/pressure.ts';
import { newRedis } from '../src/platform/redis.ts';
import type { LoadedModel } from '../src/registry/load.ts';
import { createRuntimeFactory } from '../src/runtime/factory.ts';
import { ModelCatalog } from '../src/serving/catalog.ts';
import { JobRunners, runtimeKey } from '../src/serving/runners.ts';
import { Scorer } from '../src/serving/scorer.ts';
import type { BatchRunRequest, BatchThreadConfig, BatchThreadMessage, BatchThreadRequest } from './batch-thread.ts';

const config = workerData as BatchThreadConfig;
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
function yieldToBedside(pressure: NonNullable<BatchThreadConfig['pressure']>): () => Promise<void> {
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
 * bucket SDKs take seconds to load in a fresh thread, a start-up a run that reads no bucket would pay for nothing.
 */
async function runStorage(inputPath: string): Promise<BatchStorage> {
  const local = new LocalStorage(config.dataDir);
  if (!config.objectStores && !isObjectUrl(inputPath)) return local;
  const { Buckets, withBuckets } = await import('../src/batch/buckets.ts');
  return withBuckets(local, Buckets.from(config.objectStores));
}

const port = parentPort;
if (!port) throw new Error('batch-thread must run in a worker thread');

// kept for the thread's life: what a fresh thread per run paid for on every run
const redis = newRedis(config.redisUrl, { maxRetriesPerRequest: 3 });
// the same factory as the gateway: ONNX in-process, or a cloud endpoint behind timeouts, retries and a breaker
// (bounded by the model's async timeout, as a batch has no caller waiting on one row)
const factory = createRuntimeFactory({ onnxThreads: config.onnxThreads, caller: 'job' });
/**
 * Per model, the runners (ONNX sessions, remote clients) of the versions its last run used, and what they were made
 * from: each version's runtime key (name, version, runtime spec with its sha256) and verified artifact. A run whose
 * model differs in any of them (a new version, a new artifact, a reload from another directory) gets new runners, and
 * the old ones are closed: a stale session is never scored with, and sessions do not pile up over releases.
 */
const runnersByModel = new Map<string, { made: string; runners: JobRunners }>();

async function runnersFor(model: LoadedModel): Promise<JobRunners> {
  const made = JSON.stringify(
    model.manifest.versions.map((v) => [runtimeKey(model, v), model.artifacts.get(v.version) ?? null]),
  );
  const kept = runnersByModel.get(model.manifest.name);
  if (kept?.made === made) return kept.runners;
  runnersByModel.delete(model.manifest.name);
  await kept?.runners.close();
  const runners = new JobRunners(factory, 'batch');
  runnersByModel.set(model.manifest.name, { made, runners });
  return runners;
}

/** Scores one run; its outcome (or its failure) goes to the parent. The thread stays up for the next one. */
async function score(request: BatchRunRequest): Promise<void> {
  pausedMs = 0;
  scoringMs = 0;
  // the parent's watchdog: a thread that stops saying this while it runs is stuck, and is replaced
  const alive = setInterval(
    () => port?.postMessage({ type: 'alive' } satisfies BatchThreadMessage),
    config.aliveEveryMs,
  );
  let answer: BatchThreadMessage;
  try {
    const name = request.model.manifest.name;
    const runs = new RunStore(redis, new KeySpace(config.prefix, [name]));
    const run = await runs.get(request.runId);
    if (!run) throw new Error(`run ${request.runId} not found`);
    // the routing is the run's; suspensions are followed, so the kill switch stops the run between chunks
    const catalog = ModelCatalog.fixed([request.model], { [name]: request.routing }, { redis, prefix: config.prefix });
    const runners = await runnersFor(request.model);
    // the thread has its own Redis connection, so it flushes its own aggregates: no protocol to the parent needed
    const keys = new KeySpace(config.prefix); // the taps write in the run's model's shard
    const recorder = config.monitoring ? new MonitoringRecorder({ redis, keys }) : undefined;
    // written as the chunks score, not held for the second the gateway's log waits: a chunk's rows then die young
    const predictionLog = config.monitoring
      ? new PredictionLog({ redis, keys, maxBufferedRows: PREDICTION_LOG_BATCH_ROWS })
      : undefined;
    try {
      await catalog.refresh();
      catalog.follow(1000);
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
        chunkTimeoutMs: request.chunkTimeoutMs,
        ...(request.exportFiles ? { exportFiles: request.exportFiles } : {}),
        onChunk: (scored, failed) => {
          port?.postMessage({ type: 'chunk', scored, failed, pausedMs, scoringMs } satisfies BatchThreadMessage);
          pausedMs = 0;
          scoringMs = 0;
        },
        ...(config.pressure ? { beforeChunk: yieldToBedside(config.pressure) } : {}),
      });
      answer = { type: 'done', outcome };
    } catch (err) {
      // committed chunks stay committed: the run resumes from its checkpoint once the model is resumed
      if (!(err instanceof Problem && err.code === 'model_suspended')) throw err;
      answer = { type: 'done', outcome: 'suspended' };
    } finally {
      // before the answer: the run's monitoring and prediction log are written by the time the parent hears it ended
      // (and a thread told to stop after it loses nothing)
      await recorder?.close();
      await predictionLog?.close();
      catalog.close();
    }
  } catch (err) {
    // a malformed input fails the same way on every attempt: the parent fails the run at once
    // and so does an input that is not there or not the caller's (an object deleted after the run was accepted)
    const permanent = err instanceof InputFileError || (err instanceof StorageError && err.reason !== 'unreadable');
    answer = { type: 'error', message: (err as Error).message, permanent };
  } finally {
    clearInterval(alive);
  }
  port?.postMessage(answer);
}

/**
 * Stops the thread without interrupting anything: sessions released, clients closed, the connection ended, so its
 * event loop empties and it exits. The parent never terminates a thread that may be inside a session run: a worker
 * terminated in the middle of a native call aborts the whole process (onnxruntime-node's addon throws a C++ exception
 * as its environment goes away; seen in this repo's tests as `terminate called after throwing 'Napi::Error'`).
 */
async function stop(): Promise<void> {
  for (const { runners } of runnersByModel.values()) await runners.close().catch(() => undefined);
  runnersByModel.clear();
  await factory.close().catch(() => undefined);
  redis.disconnect();
  port?.close();
}

// one run at a time (the parent sends the next only once this one has answered); chained all the same, so two runs
// never share the counters above, and a stop waits for the run before it
let queue = Promise.resolve();
port.on('message', (message: BatchThreadRequest) => {
  if (message.type === 'run') queue = queue.then(() => score(message));
  else if (message.type === 'stop') queue = queue.then(stop);
  else if (message.type === 'hang') {
    // a fault a test injects: the event loop held, as a runaway computation or a native call that does not return
    // holds it (no chunk, no heartbeat)
    const until = performance.now() + message.ms;
    while (performance.now() < until) {
      // held
    }
  } else if (message.type === 'crash') {
    // a fault a test injects: an exception nothing catches, thrown on the thread's event loop between two awaits of
    // the run (what a bug in the thread's code does)
    setImmediate(() => {
      throw new Error('batch thread crashed (a test asked it to)');
    });
  }
});
port.postMessage({ type: 'ready' } satisfies BatchThreadMessage);
