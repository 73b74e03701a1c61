/**
 * A batch run's publication to its output location (and the analytics sink): what the run has released, as its
 * clinician review stands. At completion the batch job publishes what is released at once (everything, when there is
 * no review); a review decision queues a `publish` job on the run's shard batch queue (workers/batch-queue.ts), which
 * this module runs: the approved rest uploaded, or, on a rejection, only the manifest of an above-threshold run
 * rewritten (its released rows stay, its held rows never go). Uploads are never made in the decision's HTTP request.
 */
import { DelayedError, type Job, UnrecoverableError } from 'bullmq';
import type { Logger } from 'pino';
import { outputObjectUrl, publishRelease } from '../src/batch/bucket-outputs.ts';
import type { Buckets } from '../src/batch/buckets.ts';
import type { BatchReviewService } from '../src/batch/review.ts';
import type { BatchRun, PublishState, RunStore } from '../src/batch/runs.ts';
import type { LocalStorage } from '../src/batch/storage.ts';
import type { AuditLog } from '../src/platform/audit.ts';
import type { BatchJobData } from './batch-queue.ts';

/** A decision made before its run was marked completed waits this long between looks (the run publishes first). */
const RUN_NOT_DONE_RECHECK_MS = 30_000;

export interface PublishDeps {
  runs: RunStore;
  storage: LocalStorage;
  buckets?: Buckets;
  reviews?: Pick<BatchReviewService, 'holdOf'>;
  audit?: AuditLog;
  logger: Logger;
  now: () => number;
}

/**
 * Uploads what the run has released now and records it on the run (`publishState`, `publishedAt`, the error cleared)
 * and, when anything was uploaded, in the audit trail (`batch.publish`); says what the bucket now holds. Throws when
 * an upload fails: the caller's job is retried.
 */
export async function publishAndRecord(run: BatchRun, deps: PublishDeps): Promise<PublishState | 'nothing'> {
  if (!deps.buckets) return 'nothing';
  const hold = await deps.reviews?.holdOf(run);
  const { state, uploaded } = await publishRelease(run, hold, deps.storage, deps.buckets);
  if (run.output) {
    await deps.runs.update(run.id, {
      publishState: state,
      publishError: '',
      ...(uploaded.length > 0 ? { publishedAt: deps.now() } : {}),
    });
  }
  if (uploaded.length === 0) return run.output ? state : 'nothing';
  await deps.audit?.appendFor(run.model, {
    actor: run.requestedBy,
    role: 'system',
    action: 'batch.publish',
    target: run.id,
    model: run.model,
    version: run.version,
    detail: `${run.output ? `${state} at ${outputObjectUrl(run, '')}` : 'analytics sink'}: ${uploaded.length} objects uploaded`,
  });
  return run.output ? state : 'nothing';
}

/** A `publish` job: the run's release after a review decision, once the run is completed; idempotent, retried. */
export async function execPublishJob(job: Job<BatchJobData>, deps: PublishDeps, token?: string): Promise<string> {
  const runId = job.data.runId as string;
  const run = await deps.runs.get(runId);
  if (!run) return 'run gone';
  if (run.state === 'queued' || run.state === 'running') {
    // decided before the run was marked completed: its own publication goes first, so this one never precedes it
    await job.moveToDelayed(Date.now() + RUN_NOT_DONE_RECHECK_MS, token);
    throw new DelayedError();
  }
  if (run.state !== 'completed') return `run ${run.state}`;
  try {
    return await publishAndRecord(run, deps);
  } catch (err) {
    const message = (err as Error).message.slice(0, 500);
    const final = err instanceof UnrecoverableError || job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
    deps.logger.warn(
      { runId, model: run.model, attempt: job.attemptsMade + 1, error: message },
      'batch publish failed',
    );
    await deps.runs.update(runId, {
      publishError: message,
      ...(final && run.output ? { publishState: 'failed' } : {}),
    });
    if (final) {
      await deps.audit?.appendFor(run.model, {
        actor: run.requestedBy,
        role: 'system',
        action: 'batch.publish.failed',
        target: run.id,
        model: run.model,
        version: run.version,
        detail: `gave up after ${job.attemptsMade + 1} attempts: ${message}`,
      });
    }
    throw err;
  }
}
