/**
 * Periodic upkeep, safe to run in every replica at once:
 * - escalates holds older than their model's review deadline (flagged once, counted, logged);
 * - queues callbacks left in the outbox by a process that stopped between recording a release and queueing it;
 * - queues the bucket publications of batch review decisions left the same way (BatchReviewService).
 */
import type { Logger } from 'pino';
import type { BatchReviewService } from '../src/batch/review.ts';
import type { CallbackSender, Outbox } from '../src/callbacks/outbox.ts';
import type { JobStore } from '../src/jobs/store.ts';
import type { JobMetrics } from '../src/platform/metrics.ts';
import type { ModelCatalog } from '../src/serving/catalog.ts';

export interface MaintenanceDeps {
  store: JobStore;
  outbox: Outbox;
  callbacks: CallbackSender;
  batchReviews?: Pick<BatchReviewService, 'queueOutstandingPublications'>;
  /** the manifests in force (a reload changes review deadlines from the next sweep) */
  catalog: ModelCatalog;
  metrics: JobMetrics;
  logger: Logger;
  intervalMs: number;
  now: () => number;
}

export async function sweep(deps: MaintenanceDeps): Promise<void> {
  const { store, logger } = deps;
  for (const { manifest: m } of deps.catalog.list()) {
    if (!m.review || m.review.policy === 'never') continue;
    const deadlineMinutes = m.review.deadlineMinutes;
    for (const id of await store.overdue(m.name, deps.now() - deadlineMinutes * 60_000)) {
      if (await store.escalate(id)) {
        deps.metrics.escalations.inc({ model: m.name });
        logger.warn({ jobId: id, model: m.name, deadlineMinutes }, 'review overdue: escalated');
      }
    }
  }
  for (const { jobId, event } of await deps.outbox.pending()) await deps.callbacks.send(jobId, event);
  const publications = (await deps.batchReviews?.queueOutstandingPublications()) ?? 0;
  if (publications > 0) logger.warn({ publications }, 'batch review publications left unqueued: queued');
}

export function startMaintenance(deps: MaintenanceDeps) {
  let running: Promise<void> = Promise.resolve();
  const tick = () => {
    running = sweep(deps).catch((err: Error) =>
      deps.logger.warn({ err: { message: err.message } }, 'maintenance sweep failed'),
    );
  };
  const timer = setInterval(tick, deps.intervalMs);
  tick();
  return {
    /** runs one sweep now (tests, and the first tick at start) */
    sweep: () => sweep(deps),
    async close() {
      clearInterval(timer);
      await running;
    },
  };
}
