import { DelayedError, type Job, UnrecoverableError } from 'bullmq';
import type { Logger } from 'pino';
import type { Buckets } from '../src/batch/buckets.ts';
import { bulkManifest } from '../src/batch/manifest.ts';
import type { BatchReviewService } from '../src/batch/review.ts';
import { outputKey, type RunStore } from '../src/batch/runs.ts';
import type { ScheduleService } from '../src/batch/schedules.ts';
import type { LocalStorage } from '../src/batch/storage.ts';
import { type BulkExports, exportRunInput } from '../src/ingress/bulk-export.ts';
import { IngressError } from '../src/ingress/smart-token.ts';
import type { AuditLog } from '../src/platform/audit.ts';
import type { KeySpace } from '../src/platform/keyspace.ts';
import type { BatchMetrics } from '../src/platform/metrics.ts';
import type { Pressure } from '../src/platform/pressure.ts';
import { ShardWorkers } from '../src/platform/queue.ts';
import { newRedis } from '../src/platform/redis.ts';
import type { ModelCatalog } from '../src/serving/catalog.ts';
import { execPublishJob, publishAndRecord } from './batch-publish.ts';
import { BATCH_QUEUE, type BatchJobData, PUBLISH_JOB, scheduledRunId } from './batch-queue.ts';
import { type BatchOutcome, BatchThreads } from './batch-thread-run.ts';

/** How long one chunk may take to score: a batch has no caller waiting, only a stuck runtime to give up on. */
const CHUNK_TIMEOUT_MS = 10 * 60_000;

export interface BatchWorkerDeps {
  redisUrl: string;
  prefix: string;
  keys: KeySpace;
  /** the shard prefixes whose batch queues this process consumes (TRIAGE_WORKER_SHARDS) */
  shards: readonly string[];
  runs: RunStore;
  schedules: ScheduleService;
  storage: LocalStorage;
  /** S3 and GCS buckets: inputs read in the run's thread (configured from `objectStores`), outputs published here */
  buckets?: Buckets;
  objectStores?: string | undefined;
  catalog: ModelCatalog;
  metrics: BatchMetrics;
  logger: Logger;
  onnxThreads: number;
  /** the batch thread's nice value (0 keeps the process's) */
  batchNice?: number;
  /** a scheduled slot more than this late counts as missed (its schedule decides: skip or catch up) */
  missedAfterMs: number;
  lockDurationMs: number;
  /** how soon a run paused by a suspension looks again */
  suspendedRecheckMs?: number;
  /** monitoring taps on the batch thread's scorer */
  monitoring?: boolean;
  now: () => number;
  /** in the gateway's process: chunks yield while its event loop is under pressure */
  pressure?: Pressure;
  /** FHIR servers' Bulk Data exports as inputs (src/ingress/) */
  bulkExports?: BulkExports;
  /** holds a finished run for clinician review when its model's `batch.review` says so */
  reviews?: Pick<BatchReviewService, 'holdFinished' | 'holdOf'>;
  /** where publications are recorded (`batch.publish`) */
  audit?: AuditLog;
  /** the warm threads runs score in (batchThreadsFor) */
  threads: BatchThreads;
}

/** The run a job stands for: an on-demand run's id, or a scheduled slot's run (created once, with the version in force). */
async function runIdFor(job: Job<BatchJobData>, deps: BatchWorkerDeps): Promise<string | undefined> {
  if (job.data.runId) return job.data.runId;
  const scheduleId = job.data.scheduleId as string;
  const schedule = await deps.schedules.get(scheduleId);
  if (!schedule) return undefined;
  const slot = Number(String(job.id).split(':').pop());
  const slotTime = Number.isFinite(slot) ? slot : job.timestamp;
  const runId = scheduledRunId(deps.keys, schedule.model, scheduleId, slotTime);
  // the routing in force now, read fresh: a promotion made through the API on any replica is honoured
  const model = await deps.catalog.fresh(schedule.model);
  const late = deps.now() - slotTime > deps.missedAfterMs;
  // a slot that falls while the kill switch is on is skipped, and the run record says why
  const suspended = model && deps.catalog.suspension(model.name, model.version);
  const skipped = suspended
    ? `model suspended at the slot (${suspended.at} by ${suspended.by}): ${suspended.reason}`
    : late && schedule.missed === 'skip'
      ? 'slot missed while the workers were down (missed: skip)'
      : undefined;
  const created = await deps.runs.create({
    id: runId,
    model: schedule.model,
    version: model?.version ?? 'unknown',
    requestedBy: `schedule:${scheduleId}`,
    scheduleId,
    ...(schedule.readers ? { readers: schedule.readers } : {}),
    ...('path' in schedule.input ? { input: schedule.input } : exportRunInput(schedule.input)),
    asOf: slotTime,
    state: skipped ? 'skipped' : 'queued',
    createdAt: deps.now(),
    ...(skipped ? { error: skipped } : {}),
  });
  if (created && suspended)
    deps.logger.warn({ runId, model: schedule.model }, 'scheduled slot skipped: model suspended');
  return runId;
}

/**
 * Turns a queued run or a scheduled slot into a run, and scores it in a worker thread. Exactly once: a slot's run id
 * is derived from the slot, so a re-triggered slot finds its run; a run interrupted by a crash is picked up again
 * (BullMQ stalled-job recovery) and resumes from its last committed chunk.
 */
export async function execBatchJob(job: Job<BatchJobData>, deps: BatchWorkerDeps, token?: string): Promise<string> {
  const { runs, logger, metrics } = deps;
  const runId = await runIdFor(job, deps);
  if (!runId) return 'schedule removed';
  const run = await runs.get(runId);
  if (
    !run ||
    run.state === 'completed' ||
    run.state === 'cancelled' ||
    run.state === 'skipped' ||
    run.state === 'failed'
  ) {
    return `run ${run?.state ?? 'gone'}`;
  }
  const model = await deps.catalog.fresh(run.model);
  if (!model) {
    await runs.transition(runId, ['queued', 'running'], 'failed', {
      error: 'the model is no longer served',
      finishedAt: deps.now(),
    });
    return 'failed';
  }
  // the review hold is fixed at the first start: a resumed run splits its rows as it began
  const review = model.manifest.batch?.review?.hold;
  const first = { startedAt: deps.now(), ...(review ? { review } : {}) };
  await runs.transition(runId, ['queued', 'running'], 'running', run.startedAt ? {} : first);
  const started = deps.now();
  let outcome: BatchOutcome;
  try {
    // first start: the run's folder is made here, exclusively (a resumed run reopens its own)
    if (!run.startedAt) {
      await deps.storage.createDir(run.dir);
      metrics.jobQueueWait.observe({ model: run.model, tier: 'batch' }, Math.max(0, started - run.createdAt) / 1000);
    }
    // a FHIR server's export: kicked off, awaited and staged before a row is scored (src/ingress/bulk-export.ts)
    const staged = run.source && deps.bulkExports ? await deps.bulkExports.stage(run, runs, deps.storage) : undefined;
    if (staged === 'cancelled') return 'cancelled';
    outcome = await deps.threads.run(
      {
        runId,
        // the manifest in force (an approved threshold change included), not the one read from disk
        model: { ...model.loaded, manifest: model.manifest },
        routing: model.routing,
        chunkTimeoutMs: CHUNK_TIMEOUT_MS,
        ...(staged ? { exportFiles: staged } : {}),
      },
      ({ scored, failed, pausedMs, scoringMs }) => {
        metrics.batchRows.inc({ model: run.model, outcome: 'scored' }, scored);
        metrics.batchRows.inc({ model: run.model, outcome: 'failed' }, failed);
        if (pausedMs > 0) metrics.batchYield.inc({ model: run.model }, pausedMs / 1000);
        if (scored > 0) {
          const labels = { model: run.model, version: run.version, tier: 'batch', status: 'ok' };
          metrics.inferenceDuration.observe(labels, scoringMs / 1000);
        }
      },
    );
    if (outcome === 'suspended') {
      // the kill switch: the run waits, queued at its checkpoint, and resumes once the model is resumed
      await runs.transition(runId, ['running'], 'queued', {});
      await job.moveToDelayed(Date.now() + (deps.suspendedRecheckMs ?? 5000), token);
      throw new DelayedError();
    }
    const seconds = (deps.now() - started) / 1000;
    metrics.batchRunDuration.observe({ model: run.model, outcome }, seconds);
    if (outcome === 'cancelled') {
      await deps.bulkExports?.finished(run, false, deps.storage);
      return 'cancelled';
    }
    const finished = await runs.get(runId);
    if (!finished) return 'gone';
    await deps.bulkExports?.finished(finished, true, deps.storage);
    finished.finishedAt = deps.now();
    await deps.storage.writeWhole(
      outputKey(finished, 'manifest.json'),
      JSON.stringify(
        bulkManifest(finished, run.scheduleId ? `schedule:${run.scheduleId}` : `/v1/models/${run.model}/batches`),
        null,
        2,
      ),
    );
    // held before it is completed: a run that needs review is never served without its hold
    await deps.reviews?.holdFinished(finished);
    // a bucket output location and the analytics sink: what the run releases now is uploaded before the run is
    // complete (a failed upload fails the attempt, and the run is tried again): everything, or under a review policy
    // what the review releases at once; the rest goes out when a reviewer approves it (workers/batch-publish.ts)
    await publishAndRecord({ ...finished, state: 'completed' }, deps);
    await runs.transition(runId, ['running'], 'completed', { finishedAt: finished.finishedAt });
    if (run.scheduleId) metrics.batchLastSuccess.set({ schedule: run.scheduleId }, finished.finishedAt / 1000);
    logger.info(
      { runId, model: run.model, scored: finished.scored, failed: finished.failed, seconds },
      'batch run completed',
    );
    return 'completed';
  } catch (err) {
    const message = (err as Error).message;
    const finalAttempt =
      err instanceof UnrecoverableError ||
      (err instanceof IngressError && err.permanent) ||
      job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
    logger.warn({ runId, model: run.model, attempt: job.attemptsMade + 1, error: message }, 'batch run attempt failed');
    if (finalAttempt) {
      await deps.bulkExports?.finished(run, false, deps.storage).catch(() => {});
      await runs.transition(runId, ['queued', 'running'], 'failed', {
        error: message.slice(0, 500),
        finishedAt: deps.now(),
      });
      metrics.batchRunDuration.observe({ model: run.model, outcome: 'failed' }, (deps.now() - started) / 1000);
    }
    // an export that cannot succeed (a 4xx kick-off, a failed export, an expired file) is not attempted again
    throw err instanceof IngressError && err.permanent ? new UnrecoverableError(message) : err;
  }
}

/**
 * The warm batch threads of a batch worker with these settings, one of them started now: an on-demand run, and a
 * schedule's slot at night, start without waiting for a thread to load its modules and connect (half a second or
 * more). A process starts them first thing (src/gateway.ts, workers/main.ts), so they load while it starts and the
 * first run after a start is warm too. A thread silent for `hangAfterMs` during a run (default: twice the chunk
 * timeout) is stopped and the attempt fails.
 */
export function batchThreadsFor(
  deps: Pick<
    BatchWorkerDeps,
    'redisUrl' | 'prefix' | 'objectStores' | 'pressure' | 'onnxThreads' | 'batchNice' | 'monitoring' | 'logger'
  > & { dataDir: string; hangAfterMs?: number },
): BatchThreads {
  const threads = new BatchThreads({
    config: {
      redisUrl: deps.redisUrl,
      prefix: deps.prefix,
      dataDir: deps.dataDir,
      ...(deps.objectStores ? { objectStores: deps.objectStores } : {}),
      // beside the gateway a run scores on one core at most: no intra-op threads to crowd the bedside answers
      onnxThreads: deps.pressure ? 1 : deps.onnxThreads,
      nice: deps.batchNice ?? 0,
      ...(deps.pressure
        ? { pressure: { buffer: deps.pressure.buffer, maxUtilization: deps.pressure.batchPaceUtilization } }
        : {}),
      monitoring: deps.monitoring !== false,
    },
    hangAfterMs: deps.hangAfterMs ?? 2 * CHUNK_TIMEOUT_MS,
    logger: deps.logger,
  });
  threads.warm();
  return threads;
}

/**
 * One BullMQ worker per shard served, one run (or one run's publication) at a time each: a process serving several shards may score one run of
 * each at once (each in its own niced thread); give a process one shard to keep it to one run.
 */
export function startBatchWorker(deps: BatchWorkerDeps) {
  const { logger } = deps;
  const { threads } = deps;
  const connection = newRedis(deps.redisUrl, { maxRetriesPerRequest: null });
  const worker = new ShardWorkers<BatchJobData>(
    BATCH_QUEUE,
    deps.shards,
    (job, token) => (job.name === PUBLISH_JOB ? execPublishJob(job, deps, token) : execBatchJob(job, deps, token)),
    {
      connection,
      concurrency: 1,
      // a crashed worker's run is picked up again (and resumed) once its lock lapses, not after BullMQ's 30 s default
      lockDuration: deps.lockDurationMs,
      stalledInterval: deps.lockDurationMs,
      maxStalledCount: 3,
    },
  );
  worker.on('error', (err) => logger.warn({ err: { message: err.message } }, 'batch worker error'));
  return {
    worker,
    threads,
    async close() {
      // the run under way finishes first (BullMQ waits for active jobs), then the warm threads stop
      await worker.close();
      await threads.close();
      connection.disconnect();
    },
  };
}
