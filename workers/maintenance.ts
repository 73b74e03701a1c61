import type { Logger } from 'pino';
import { type CallbackJobData, type CallbackPolicy, enqueueCallback, type Queues } from '../src/jobs/queues.ts';
import type { JobStore } from '../src/jobs/store.ts';
import type { JobMetrics } from '../src/platform/metrics.ts';
import type { Manifest } from '../src/registry/schema.ts';

export interface MaintenanceDeps {
  store: JobStore;
  queues: Queues;
  manifests: readonly Manifest[];
  metrics: JobMetrics;
  logger: Logger;
  callbacks: CallbackPolicy;
  intervalMs: number;
  now: () => number;
}

/**
 * Periodic upkeep, safe to run in every replica at once:
 * - escalates holds older than their model's review deadline (flagged once, counted, logged);
 * - enqueues callbacks left in the outbox by a process that stopped between recording a release and queueing it.
 */
export function startMaintenance(deps: MaintenanceDeps) {
  const { store, logger } = deps;
  const sweep = async () => {
    for (const m of deps.manifests) {
      if (!m.review || m.review.policy === 'never') continue;
      const cutoff = deps.now() - m.review.deadlineMinutes * 60_000;
      const overdue = await store.redis.zrangebyscore(store.pendingKeyFor(m.name), '-inf', String(cutoff));
      for (const id of overdue) {
        if (await store.escalate(id)) {
          deps.metrics.escalations.inc({ model: m.name });
          logger.warn(
            { jobId: id, model: m.name, deadlineMinutes: m.review.deadlineMinutes },
            'review overdue: escalated',
          );
        }
      }
    }
    for (const member of await store.redis.smembers(store.outboxKey)) {
      const [jobId, event] = member.split('|') as [string, CallbackJobData['event']];
      await enqueueCallback(deps.queues, store.redis, store.outboxKey, deps.callbacks, jobId, event);
    }
  };
  let running: Promise<void> = Promise.resolve();
  const tick = () => {
    running = sweep().catch((err) =>
      logger.warn({ err: { message: (err as Error).message } }, 'maintenance sweep failed'),
    );
  };
  const timer = setInterval(tick, deps.intervalMs);
  tick();
  return {
    /** runs one sweep now (tests, and the first tick at start) */
    sweep,
    async close() {
      clearInterval(timer);
      await running;
    },
  };
}
