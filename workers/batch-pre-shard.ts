/**
 * Upgrading a deployment whose batch tier lived under the global tag (before model shards): its run records and review
 * holds stay where they are and are found by id (src/batch/runs.ts, src/batch/review-store.ts); what the old global
 * batch queue still holds is moved here, once per start of every gateway (idempotent: each step can run on several
 * replicas at once, and on a deployment that never had the old queue it finds nothing):
 * - its job schedulers are removed (every stored schedule has its scheduler on its model's shard: syncSchedules);
 * - runs and slots that waited there are queued again, under the same job id, on their model's shard queue.
 * A run an old worker was running is left to it (k8s/README.md: let the old batch workers finish before upgrading).
 */
import { Queue } from 'bullmq';
import type { Logger } from 'pino';
import type { RunStore } from '../src/batch/runs.ts';
import type { ScheduleService } from '../src/batch/schedules.ts';
import type { KeySpace } from '../src/platform/keyspace.ts';
import type { ShardQueues } from '../src/platform/queue.ts';
import type { RedisClient } from '../src/platform/redis.ts';
import { BATCH_QUEUE, type BatchJobData, batchJobOptions } from './batch-queue.ts';

export interface PreShardDeps {
  redis: RedisClient;
  keys: KeySpace;
  queues: ShardQueues<BatchJobData>;
  runs: RunStore;
  schedules: ScheduleService;
  logger: Logger;
}

/** Moves what waits in the pre-shard batch queue to the model shards; returns how many jobs moved. */
export async function adoptPreShardBatchQueue(deps: PreShardDeps): Promise<number> {
  const { keys, logger } = deps;
  // the old queue's keys are `<global tag>:batch:…`; the shards' are `{<base>:<model>}:batch:…`. A deployment that never
  // had it is not given one (a BullMQ queue writes its meta key when opened)
  const oldKey = (k: string) => `${keys.global}:${BATCH_QUEUE}:${k}`;
  if ((await deps.redis.exists(oldKey('meta'), oldKey('id'), oldKey('repeat'))) === 0) return 0;
  const old = new Queue<BatchJobData>(BATCH_QUEUE, {
    connection: deps.redis,
    prefix: keys.global,
    skipMetasUpdate: true,
  });
  old.on('error', (err: Error) =>
    logger.warn({ queue: 'batch (pre-shard)', err: { message: err.message } }, 'queue error'),
  );
  try {
    for (const scheduler of await old.getJobSchedulers()) await old.removeJobScheduler(scheduler.key);
    let moved = 0;
    for (const job of await old.getJobs(['waiting', 'delayed', 'prioritized'])) {
      if (!job?.id) continue;
      const model = await modelOf(job.data, deps);
      if (model !== undefined) {
        await deps.queues.for(model).add(job.name, job.data, batchJobOptions(job.id));
        moved++;
      }
      // a job whose run or schedule is gone has nothing to run: dropped with the rest
      await job.remove().catch(() => undefined);
    }
    if (moved > 0) logger.info({ moved }, 'batch jobs moved from the pre-shard queue to their model shards');
    return moved;
  } finally {
    await old.close();
  }
}

async function modelOf(data: BatchJobData, deps: PreShardDeps): Promise<string | undefined> {
  if (data.runId) return (await deps.runs.get(data.runId))?.model;
  if (data.scheduleId) return (await deps.schedules.get(data.scheduleId))?.model;
  return undefined;
}
