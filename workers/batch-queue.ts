/** The batch queue, one per model shard: on-demand runs and schedules' job schedulers, each on its model's shard. */
import type { Logger } from 'pino';
import type { Scheduler } from '../src/batch/schedules.ts';
import type { RunQueue } from '../src/batch/service.ts';
import type { KeySpace } from '../src/platform/keyspace.ts';
import { jobOptions, type RetryPolicy, ShardQueues } from '../src/platform/queue.ts';
import type { RedisClient } from '../src/platform/redis.ts';

export const BATCH_QUEUE = 'batch';

export interface BatchJobData {
  /** an on-demand run */
  runId?: string;
  /** a scheduled slot: the run id derives from the schedule and the slot time */
  scheduleId?: string;
}

/** A run's publication to its bucket after a review decision (workers/batch-publish.ts), on the run's shard queue. */
export const PUBLISH_JOB = 'publish';

/**
 * A publication outlasts a bucket's bad minutes: eight attempts, 5 s doubling (about ten minutes in all). A run's
 * job id, so a decision's publication is queued once however often it is asked for.
 */
const PUBLISH_RETRY: RetryPolicy = {
  attempts: 8,
  backoffMs: 5000,
  jitter: 0.2,
  keepCompletedSeconds: 7 * 24 * 3600,
  keepFailedSeconds: 30 * 24 * 3600,
};

export const publishJobId = (runId: string) => `publish-${runId}`;

/** Queues a decided run's publication: at the head of its shard's queue (LIFO), before runs waiting to score. */
export function publishQueuePort(queues: ShardQueues<BatchJobData>) {
  return async (runId: string, model: string): Promise<void> => {
    await queues
      .for(model)
      .add(PUBLISH_JOB, { runId }, { ...jobOptions(PUBLISH_RETRY, publishJobId(runId)), lifo: true });
  };
}

/** Runs and slots alike: a failed attempt is tried again a few times, seconds apart. */
const BATCH_RETRY: RetryPolicy = {
  attempts: 3,
  backoffMs: 5000,
  keepCompletedSeconds: 7 * 24 * 3600,
  keepFailedSeconds: 30 * 24 * 3600,
};

/** A batch job's options: the retry policy, and the job id (an on-demand run's `run-<id>`, a slot's from BullMQ). */
export function batchJobOptions(jobId?: string) {
  return jobOptions(BATCH_RETRY, jobId);
}

/** The batch queue of each model shard: a run waits, and a schedule fires, on its model's shard. */
export function createBatchQueue(connection: RedisClient, keys: KeySpace, logger: Logger): ShardQueues<BatchJobData> {
  return new ShardQueues<BatchJobData>(BATCH_QUEUE, connection, keys, logger);
}

export function runQueuePort(queues: ShardQueues<BatchJobData>): RunQueue {
  return {
    async enqueue(runId, model) {
      await queues.for(model).add('run', { runId }, batchJobOptions(`run-${runId}`));
    },
    async remove(runId, model) {
      await queues
        .for(model)
        .remove(`run-${runId}`)
        .catch(() => 0);
    },
  };
}

/** BullMQ job schedulers, each on its schedule's model shard queue, fire each slot once however many workers listen. */
export function schedulerPort(queues: ShardQueues<BatchJobData>): Scheduler {
  return {
    async upsert(s) {
      await queues
        .for(s.model)
        .upsertJobScheduler(
          s.id,
          { pattern: s.cron, tz: s.timezone },
          { name: 'scheduled-run', data: { scheduleId: s.id }, opts: batchJobOptions() },
        );
    },
    async exists(id, model) {
      return Boolean(await queues.for(model).getJobScheduler(id));
    },
    async remove(id, model) {
      await queues.for(model).removeJobScheduler(id);
    },
  };
}

/** The run id of a schedule's slot: the same slot always names the same run, in the schedule's model shard. */
export function scheduledRunId(keys: KeySpace, model: string, scheduleId: string, slot: number): string {
  return keys.idFor(model, `schedule:${scheduleId}:${slot}`);
}
