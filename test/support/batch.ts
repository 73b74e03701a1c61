/** Batch-tier helpers: firing a schedule's slot by hand, and the job schedulers of every model shard. */
import { scheduledRunId } from '../../workers/batch-queue.ts';
import type { TestGateway } from './gateway.ts';
import type { ManifestEdit } from './models.ts';

/** Manifest edits (for tempModels) that put batch output under review: the two holds, on the bundled models. */
export const REVIEW_HOLDS: Record<string, ManifestEdit> = {
  // a whole run waits for a reviewer
  readmission: (m) => {
    m.batch = { ...m.batch, review: { hold: 'run' } };
  },
  // only the rows at or above the threshold wait (small chunks: a run of 120 rows spans several)
  news2: (m) => {
    m.batch = { chunkSize: 32, review: { hold: 'above-threshold' } };
  },
};

/**
 * Adds a schedule's slot job the way BullMQ's job scheduler does (job id `repeat:<schedule>:<slot millis>`, on the
 * schedule's model shard queue); returns the job and the id of the run that slot names.
 */
export async function fireSlot(gw: TestGateway, model: string, scheduleId: string, slot: number) {
  const { queues, keyspace } = gw.gateway.services;
  const jobId = `repeat:${scheduleId}:${slot}`;
  const job = await queues.batch.for(model).add('scheduled-run', { scheduleId }, { jobId });
  return { job, jobId, runId: scheduledRunId(keyspace, model, scheduleId, slot) };
}

/** The job schedulers on every shard's batch queue, with the model whose shard holds each. */
export async function jobSchedulers(gw: TestGateway) {
  const { queues, keyspace } = gw.gateway.services;
  const perShard = await Promise.all(
    keyspace
      .shards()
      .map(async ({ model }) => (await queues.batch.for(model).getJobSchedulers()).map((s) => ({ ...s, model }))),
  );
  return perShard.flat().sort((a, b) => a.key.localeCompare(b.key));
}
