import { heldRowsOf, releaseOf } from './review.ts';
import type { RunHold } from './review-store.ts';
import { type BatchRun, HELD_FILE, shadowFileName } from './runs.ts';

/** How long a finished run's files are served; `Expires` on the completion manifest says until when. */
export const RETENTION_MS = 7 * 24 * 3600_000;

export function expiresAt(run: BatchRun): number | undefined {
  return run.finishedAt === undefined ? undefined : run.finishedAt + RETENTION_MS;
}

/** The manifest's `request`: the schedule that made the run, or the kick-off endpoint. */
export function manifestRequest(run: Pick<BatchRun, 'scheduleId' | 'model'>): string {
  return run.scheduleId ? `schedule:${run.scheduleId}` : `/v1/models/${run.model}/batches`;
}

/**
 * The FHIR Bulk Data completion manifest of a finished run. `transactionTime` is the data cut-off (asOf: nothing
 * later was used); only files with content are listed; a FHIR run's output is RiskAssessment resources, and its
 * error file holds an OperationOutcome per patient that could not be scored (missing data or invalid values).
 */
export function bulkManifest(run: BatchRun, request: string, hold?: RunHold) {
  const files = (name: 'output.ndjson' | 'errors.ndjson' | typeof HELD_FILE) => `/v1/batches/${run.id}/files/${name}`;
  const errors = run.failed + run.insufficient;
  const type = run.input.format === 'fhir-ndjson' ? 'RiskAssessment' : 'Prediction';
  // an above-threshold review: the rows below are released at once, the held ones once a reviewer approves them
  const split = run.review === 'above-threshold';
  const released = split ? run.scored - run.above : run.scored;
  // approved, or nothing to hold: shadow files (they score every row, held ones too) and the held rows are listed
  const open = releaseOf(run, hold) === 'open';
  return {
    transactionTime: new Date(run.asOf).toISOString(),
    request,
    requiresAccessToken: true,
    output: [
      ...(released > 0 ? [{ type, url: files('output.ndjson'), count: released }] : []),
      ...(split && open && run.above > 0
        ? [{ type, url: files(HELD_FILE), count: run.above, extension: { reviewed: true } }]
        : []),
      ...Object.entries(run.shadowBytes)
        .filter(([, bytes]) => open && bytes > 0)
        .map(([version]) => ({
          type: 'ShadowPrediction',
          url: `/v1/batches/${run.id}/files/${shadowFileName(version)}`,
          count: run.scored,
          extension: { shadowVersion: version },
        })),
    ],
    error: errors > 0 ? [{ type: 'OperationOutcome', url: files('errors.ndjson'), count: errors }] : [],
    extension: {
      model: run.model,
      version: run.version,
      rowsRead: run.rowsDone,
      chunks: run.chunks,
      asOf: new Date(run.asOf).toISOString(),
      // per patient on FHIR runs: scored, without the data to score, and failed (invalid values, unreadable lines)
      outcomes: { scored: run.scored, insufficient: run.insufficient, failed: run.failed },
      // which FHIR server export fed the run (its request, transactionTime and files)
      ...(run.source ? { source: run.source } : {}),
      ...(run.review ? { review: reviewView(run, hold) } : {}),
      ...(run.finishedAt && run.startedAt ? { durationMs: run.finishedAt - run.startedAt } : {}),
    },
  };
}

/** A run's review as its requester and reviewers see it: what is held, and the decision (who, when, why). */
export function reviewView(run: BatchRun, hold: RunHold | undefined) {
  const heldRows = heldRowsOf(run);
  return {
    hold: run.review,
    state:
      hold?.state === 'approved' || hold?.state === 'rejected'
        ? hold.state
        : heldRows === 0 && run.state === 'completed'
          ? 'nothing_held'
          : 'awaiting_review',
    heldRows,
    aboveThreshold: run.above,
    ...(hold?.decision
      ? {
          decision: {
            outcome: hold.decision.outcome,
            by: hold.decision.by,
            ...(hold.decision.byName ? { byName: hold.decision.byName } : {}),
            reason: hold.decision.reason,
            at: new Date(hold.decision.at).toISOString(),
          },
        }
      : {}),
  };
}
