import { type BatchRun, shadowFileName } from './runs.ts';

/** The FHIR Bulk Data completion manifest of a finished run. */
export function bulkManifest(run: BatchRun, request: string) {
  const files = (name: 'output.ndjson' | 'errors.ndjson') => `/v1/batches/${run.id}/files/${name}`;
  return {
    transactionTime: new Date(run.startedAt ?? run.createdAt).toISOString(),
    request,
    requiresAccessToken: true,
    output: [
      { type: 'Prediction', url: files('output.ndjson'), count: run.scored },
      ...Object.keys(run.shadowBytes).map((version) => ({
        type: 'ShadowPrediction',
        url: `/v1/batches/${run.id}/files/${shadowFileName(version)}`,
        count: run.scored,
        extension: { shadowVersion: version },
      })),
    ],
    error: run.failed > 0 ? [{ type: 'OperationOutcome', url: files('errors.ndjson'), count: run.failed }] : [],
    extension: {
      model: run.model,
      version: run.version,
      rowsRead: run.rowsDone,
      chunks: run.chunks,
      asOf: new Date(run.asOf).toISOString(),
      ...(run.finishedAt && run.startedAt ? { durationMs: run.finishedAt - run.startedAt } : {}),
    },
  };
}
