import { type BatchRun, shadowFileName } from './runs.ts';

/** How long a finished run's files are served; `Expires` on the completion manifest says until when. */
export const RETENTION_MS = 7 * 24 * 3600_000;

export function expiresAt(run: BatchRun): number | undefined {
  return run.finishedAt === undefined ? undefined : run.finishedAt + RETENTION_MS;
}

/**
 * The FHIR Bulk Data completion manifest of a finished run. `transactionTime` is the data cut-off (asOf: nothing
 * later was used); only files with content are listed; a FHIR run's output is RiskAssessment resources, and its
 * error file holds an OperationOutcome per patient that could not be scored (missing data or invalid values).
 */
export function bulkManifest(run: BatchRun, request: string) {
  const files = (name: 'output.ndjson' | 'errors.ndjson') => `/v1/batches/${run.id}/files/${name}`;
  const errors = run.failed + run.insufficient;
  return {
    transactionTime: new Date(run.asOf).toISOString(),
    request,
    requiresAccessToken: true,
    output: [
      ...(run.scored > 0
        ? [
            {
              type: run.input.format === 'fhir-ndjson' ? 'RiskAssessment' : 'Prediction',
              url: files('output.ndjson'),
              count: run.scored,
            },
          ]
        : []),
      ...Object.entries(run.shadowBytes)
        .filter(([, bytes]) => bytes > 0)
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
      ...(run.finishedAt && run.startedAt ? { durationMs: run.finishedAt - run.startedAt } : {}),
    },
  };
}
