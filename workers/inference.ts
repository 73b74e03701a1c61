/**
 * The inference queue: async jobs scored by the one scorer, then held for review or released. Idempotent per job: a
 * job a crashed worker left half-done is picked up again by BullMQ's stalled-job recovery, and the job state machine
 * makes sure its result is recorded, held or released once.
 */
import { DelayedError, type Job, UnrecoverableError } from 'bullmq';
import type { Logger } from 'pino';
import type { CallbackSender } from '../src/callbacks/outbox.ts';
import { holdDecision } from '../src/jobs/review-policy.ts';
import type { JobQueue } from '../src/jobs/service.ts';
import type { JobRecord, JobStore } from '../src/jobs/store.ts';
import { jobRef } from '../src/outcomes/prediction-log.ts';
import { Problem } from '../src/platform/errors.ts';
import type { KeySpace } from '../src/platform/keyspace.ts';
import type { JobMetrics } from '../src/platform/metrics.ts';
import { jobOptions, ShardQueues, ShardWorkers, WORKER_CLOSE_GRACE_MS } from '../src/platform/queue.ts';
import { newRedis, type RedisClient } from '../src/platform/redis.ts';
import type { Manifest } from '../src/registry/schema.ts';
import type { ModelCatalog } from '../src/serving/catalog.ts';
import { prepareInput } from '../src/serving/inputs.ts';
import type { Prediction } from '../src/serving/predictions.ts';
import { type Scorer, SILENT_ACTION } from '../src/serving/scorer.ts';

export const INFERENCE_QUEUE = 'inference';

export interface InferenceJobData {
  jobId: string;
  /** the job's model, so a worker reads the routing in force while it claims the record (absent in older jobs) */
  model?: string;
}

/** How long a job may score when its model sets no async timeout. */
export const DEFAULT_JOB_TIMEOUT_MS = 60_000;

/** The inference queue of every model shard (`{<base>:<model>}:inference:*`). */
export function createInferenceQueue(
  connection: RedisClient,
  keys: KeySpace,
  logger: Logger,
): ShardQueues<InferenceJobData> {
  return new ShardQueues<InferenceJobData>(INFERENCE_QUEUE, connection, keys, logger);
}

/**
 * The job port of the async tier. Adding is idempotent (the BullMQ job id is the job's), so a submission retried
 * after a crash between the record and the queue still gets its job queued, once.
 */
export function inferenceQueuePort(queues: ShardQueues<InferenceJobData>): JobQueue {
  return {
    async enqueue(jobId: string, manifest: Manifest) {
      await queues.for(manifest.name).add(
        'infer',
        { jobId, model: manifest.name },
        jobOptions(
          {
            attempts: manifest.async?.attempts ?? 3,
            backoffMs: 1000,
            jitter: 0.5,
            keepCompletedSeconds: 24 * 3600,
            keepFailedSeconds: 7 * 24 * 3600,
          },
          jobId,
        ),
      );
    },
    async remove(jobId: string) {
      await queues
        .forId(jobId)
        ?.remove(jobId)
        .catch(() => 0);
    },
  };
}

export interface InferenceJobDeps {
  store: JobStore;
  catalog: ModelCatalog;
  /** the job tiers' scorer (runtimes made on use, remote calls with a job's budget) */
  scorer: Scorer;
  callbacks: CallbackSender;
  metrics: JobMetrics;
  logger: Logger;
  now: () => number;
  /** for the review sample; injectable so tests can decide */
  random?: () => number;
  /** how soon a job waiting on a suspended model looks again */
  suspendedRecheckMs?: number;
  /**
   * The store on the worker's BullMQ connection (`store.on(connection)`): a job's hold or release is written there,
   * right ahead of BullMQ's completion of the job (see `settle`). Default `store`.
   */
  outcomes?: JobStore;
  /** what follows written outcomes (counters, callbacks) and is still running: the worker's close waits for it */
  trailing?: Set<Promise<void>>;
}

/** How soon a job waiting on a suspended model looks again, when not configured. */
export const SUSPENDED_RECHECK_MS = 5000;

/** Records a job's failure, once (only from queued or running), and queues its failed callback. */
async function failJob(deps: InferenceJobDeps, record: JobRecord, reason: string): Promise<void> {
  const { id, model } = record;
  const done = await deps.store.transition(id, model, ['queued', 'running'], 'failed', {
    now: deps.now(),
    fields: { error: reason },
    ...(record.callbackUrl ? { callback: 'failed' as const } : {}),
    audit: { actor: 'system', role: 'worker', action: 'job.fail', target: id, model, detail: reason },
  });
  if (!done.ok) return;
  deps.metrics.jobs.inc({ model, state: 'failed' });
  if (record.callbackUrl) await deps.callbacks.send(id, 'failed');
}

export async function execInferenceJob(
  job: Job<InferenceJobData>,
  deps: InferenceJobDeps,
  token?: string,
): Promise<string> {
  const { store, now } = deps;
  const id = job.data.jobId;
  // one round trip: queued (or a stalled running) → running with its start time and attempt, and the record back,
  // beside the routing in force now (shadows changed through the API included) of the model the job names
  const [claim, routed] = await Promise.all([
    store.claim(id, now()),
    job.data.model === undefined ? undefined : deps.catalog.fresh(job.data.model),
  ]);
  if (!claim.record) return claim.state ? `already ${claim.state}` : 'gone';
  const record = claim.record;
  const started = now();
  const labels = { model: record.model, tier: 'async' };
  if (record.attempts === 1) deps.metrics.jobQueueWait.observe(labels, Math.max(0, started - record.createdAt) / 1000);
  const took = (outcome: string) =>
    deps.metrics.jobDuration.observe({ ...labels, outcome }, Math.max(0, now() - started) / 1000);
  // the version is the one recorded at submit
  const model = routed?.name === record.model ? routed : await deps.catalog.fresh(record.model);
  if (!model?.manifest.versions.some((v) => v.version === record.version)) {
    await failJob(deps, record, 'the model is no longer served');
    throw new UnrecoverableError('model not served');
  }
  let input: ReturnType<typeof prepareInput>;
  try {
    input = prepareInput(model.manifest, record.input);
  } catch (err) {
    // bad input fails at once: retrying cannot help
    await failJob(deps, record, err instanceof Problem ? `invalid input: ${err.message}` : 'invalid input');
    throw new UnrecoverableError('invalid input');
  }
  let predictions: Prediction[];
  let silent = false;
  try {
    const result = await deps.scorer.score({
      model,
      input: { ...input, refs: Array.from({ length: input.rows }, (_, i) => jobRef(id, i)) },
      tier: 'async',
      version: record.version,
      deadlineMs: model.manifest.async?.timeoutMs ?? DEFAULT_JOB_TIMEOUT_MS,
    });
    predictions = result.predictions;
    silent = result.silent === true;
  } catch (err) {
    if (err instanceof Problem && err.code === 'model_suspended') {
      // the kill switch: the job waits, queued, and is scored once resumed (a wait spends no attempt)
      await store.transition(id, record.model, ['running'], 'queued', { now: now() });
      await job.moveToDelayed(Date.now() + (deps.suspendedRecheckMs ?? SUSPENDED_RECHECK_MS), token);
      throw new DelayedError();
    }
    const finalAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
    deps.logger.warn(
      {
        jobId: id,
        model: record.model,
        attempt: job.attemptsMade + 1,
        finalAttempt,
        err: { message: (err as Error).message },
      },
      'inference attempt failed',
    );
    if (finalAttempt) await failJob(deps, record, 'the model failed to score this job');
    else await store.transition(id, record.model, ['running'], 'queued', { now: now() });
    took('failed');
    throw err;
  }
  const outcome = settle(deps, job, record, model.manifest, predictions, silent);
  took(outcome);
  return outcome;
}

/**
 * Holds the result for review, or releases it, as the model's review policy says, and returns without waiting for
 * Redis: the transition is sent on the worker's BullMQ connection, so BullMQ's completion of the job (which also
 * fetches the next one) leaves right behind it and both cost one round trip. Redis runs one connection's commands in
 * order, so BullMQ never holds a job completed whose outcome was not written first; a worker that dies in between
 * leaves the job active, and the stalled-job check runs it again (it finds itself already held or released). What
 * depends on the transition's answer (the counter, the callback) follows once it comes. (ioredis sends a script's
 * body on a connection's first use; only a SCRIPT FLUSH under a live connection makes it resend one, after its
 * NOSCRIPT answer and so behind the completion.)
 */
function settle(
  deps: InferenceJobDeps,
  job: Job<InferenceJobData>,
  record: JobRecord,
  manifest: Manifest,
  predictions: Prediction[],
  silent: boolean,
): 'held' | 'released' {
  const { now, metrics } = deps;
  const store = deps.outcomes ?? deps.store;
  const { id, model, version } = record;
  // a silent deployment shows no score, so there is nothing to review: released at once, saying so
  const output = JSON.stringify(silent ? { predictions, silent: true, action: SILENT_ACTION } : { predictions });
  const hold = silent
    ? { hold: false, reason: 'silent deployment: no score shown' }
    : holdDecision(manifest, predictions, deps.random);
  const audit = { actor: 'system', role: 'worker', target: id, model, version, reason: hold.reason };
  const outcome = hold.hold ? 'held' : 'released';
  const written = hold.hold
    ? store.transition(id, model, ['running'], 'awaiting_review', {
        now: now(),
        fields: { output, heldAt: String(now()), holdReason: hold.reason },
        pending: 'add',
        audit: { ...audit, action: 'job.hold' },
      })
    : store.transition(id, model, ['running'], 'released', {
        now: now(),
        fields: { output, releasedAt: String(now()) },
        ...(record.callbackUrl ? { callback: 'released' as const } : {}),
        audit: { ...audit, action: 'job.release' },
      });
  const attempt = job.attemptsMade + 1;
  const following = written.then(
    async (result) => {
      if (!result.ok) {
        // cancelled while it scored: nothing was held or released
        deps.logger.info({ jobId: id, model, previous: result.previous }, `job not ${outcome}`);
        return;
      }
      metrics.jobs.inc({ model, state: hold.hold ? 'awaiting_review' : 'released' });
      if (!hold.hold && record.callbackUrl) await deps.callbacks.send(id, 'released');
    },
    // BullMQ's completion went right behind the write that failed: the job runs again, as after a failed attempt
    // (and a write that keeps failing ends, like one, in a recorded failure)
    async (err: Error) => {
      deps.logger.warn(
        { jobId: id, model, attempt, err: { message: err.message } },
        `recording a job ${outcome} failed`,
      );
      if (attempt < (job.opts.attempts ?? 1)) await job.retry('completed');
      else await failJob(deps, record, `the job's outcome could not be recorded`);
    },
  );
  const trailing = following.catch((err: Error) =>
    deps.logger.warn({ jobId: id, model, err: { message: err.message } }, `following a job ${outcome} failed`),
  );
  deps.trailing?.add(trailing);
  void trailing.finally(() => deps.trailing?.delete(trailing));
  return outcome;
}

export function startInferenceWorker(
  deps: InferenceJobDeps & { redisUrl: string; shards: readonly string[]; concurrency: number; lockMs?: number },
) {
  // one write for what a turn sends: a job's outcome and BullMQ's completion of it, and the other jobs' alike
  const connection = newRedis(deps.redisUrl, { maxRetriesPerRequest: null, batchWrites: true });
  // outcomes written on the connection BullMQ completes jobs on (see settle)
  const jobDeps: InferenceJobDeps = { ...deps, outcomes: deps.store.on(connection), trailing: new Set() };
  // one worker per shard served (TRIAGE_WORKER_SHARDS), each on its shard's queue
  const worker = new ShardWorkers<InferenceJobData>(
    INFERENCE_QUEUE,
    deps.shards,
    (job, token) => execInferenceJob(job, jobDeps, token),
    {
      connection,
      concurrency: deps.concurrency,
      // a crashed worker's job goes back to wait after its lock lapses, and may stall twice before it fails
      lockDuration: deps.lockMs ?? 30_000,
      stalledInterval: deps.lockMs ?? 30_000,
      maxStalledCount: 2,
    },
  );
  worker.on('error', (err) => deps.logger.warn({ err: { message: err.message } }, 'inference worker error'));
  // BullMQ may fail a job without running it (it stalled more than maxStalledCount times: it kept killing its
  // workers), or after an error the processor could not record: the record must not stay `running` forever
  worker.on('failed', (job, err) => {
    if (!job) return;
    void (async () => {
      if ((await job.getState()) !== 'failed') return; // another attempt follows
      const record = await deps.store.get(job.data.jobId);
      if (record && (record.state === 'queued' || record.state === 'running')) {
        await failJob(deps, record, `the job could not be completed (${err.message})`);
      }
    })().catch((e: Error) =>
      deps.logger.warn({ jobId: job.data.jobId, err: { message: e.message } }, 'recording a job failure failed'),
    );
  });
  return {
    worker,
    async close() {
      await worker.close();
      // what follows a written outcome, bounded as the workers' close is (a callback left is in the outbox: the
      // maintenance sweep queues it)
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.all(jobDeps.trailing ?? []),
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, WORKER_CLOSE_GRACE_MS);
        }),
      ]);
      clearTimeout(timer);
      connection.disconnect();
    },
  };
}
