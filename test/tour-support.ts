/**
 * A tour of every endpoint, for the tests that must cover all of them (the fuzz test, the log scan): a gateway through
 * the real composition root with the inference and batch workers, keys of every role, a data directory with one
 * client input, and seeded records to point the id parameters at (a job held for review, a completed batch run).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { Gateway } from '../src/gateway.ts';
import { createLogger } from '../src/platform/logger.ts';
import {
  buildGateway,
  deletePrefix,
  makePrefix,
  NEWS2_INSTANCE,
  removeDir,
  type TestGateway,
  tempDir,
  waitFor,
} from './support/index.ts';

export interface Endpoint {
  method: string;
  /** with `:name` parameters */
  path: string;
  role: 'client' | 'reviewer' | 'admin' | 'none';
  /** true when it reads a JSON body */
  body?: boolean;
}

/** Routes the app mounts (45): a test that loops over these covers each of them. */
export const ENDPOINTS: readonly Endpoint[] = [
  { method: 'GET', path: '/healthz', role: 'none' },
  { method: 'GET', path: '/readyz', role: 'none' },
  { method: 'GET', path: '/metrics', role: 'none' },
  { method: 'GET', path: '/v1/models', role: 'client' },
  { method: 'GET', path: '/v1/models/:model', role: 'client' },
  { method: 'POST', path: '/v1/models/:model/predict', role: 'client', body: true },
  { method: 'POST', path: '/v1/models/:model/jobs', role: 'client', body: true },
  { method: 'GET', path: '/v1/jobs/:job', role: 'client' },
  { method: 'DELETE', path: '/v1/jobs/:job', role: 'client' },
  { method: 'GET', path: '/v1/reviews', role: 'reviewer' },
  { method: 'GET', path: '/v1/reviews/:job', role: 'reviewer' },
  { method: 'POST', path: '/v1/reviews/:job/decision', role: 'reviewer', body: true },
  { method: 'GET', path: '/v1/batch-reviews', role: 'reviewer' },
  { method: 'GET', path: '/v1/batch-reviews/:run', role: 'reviewer' },
  { method: 'POST', path: '/v1/batch-reviews/:run/decision', role: 'reviewer', body: true },
  { method: 'GET', path: '/v1/audit', role: 'admin' },
  { method: 'GET', path: '/v1/callbacks/dead-letters', role: 'admin' },
  { method: 'POST', path: '/v1/callbacks/dead-letters/:event/replay', role: 'admin' },
  { method: 'POST', path: '/v1/models/:model/batches', role: 'client', body: true },
  { method: 'GET', path: '/v1/batches/:run', role: 'client' },
  { method: 'DELETE', path: '/v1/batches/:run', role: 'client' },
  { method: 'GET', path: '/v1/batches/:run/files/:file', role: 'client' },
  { method: 'GET', path: '/v1/schedules', role: 'admin' },
  { method: 'PUT', path: '/v1/schedules/:schedule', role: 'admin', body: true },
  { method: 'DELETE', path: '/v1/schedules/:schedule', role: 'admin' },
  { method: 'GET', path: '/v1/models/:model/routing', role: 'admin' },
  { method: 'POST', path: '/v1/models/:model/routing/promote', role: 'admin', body: true },
  { method: 'POST', path: '/v1/models/:model/routing/rollback', role: 'admin', body: true },
  { method: 'PUT', path: '/v1/models/:model/routing/canary', role: 'admin', body: true },
  { method: 'PUT', path: '/v1/models/:model/routing/shadow', role: 'admin', body: true },
  { method: 'GET', path: '/v1/models/:model/shadow', role: 'client' },
  { method: 'GET', path: '/v1/models/:model/monitoring', role: 'client' },
  { method: 'GET', path: '/v1/models/:model/suspension', role: 'client' },
  { method: 'POST', path: '/v1/models/:model/threshold-changes', role: 'reviewer', body: true },
  { method: 'GET', path: '/v1/models/:model/threshold-changes', role: 'client' },
  { method: 'GET', path: '/v1/threshold-changes/:change', role: 'reviewer' },
  { method: 'POST', path: '/v1/outcomes', role: 'client', body: true },
  { method: 'POST', path: '/v1/admin/reload', role: 'admin', body: true },
  { method: 'GET', path: '/v2', role: 'client' },
  { method: 'GET', path: '/v2/health/live', role: 'none' },
  { method: 'GET', path: '/v2/health/ready', role: 'none' },
  { method: 'GET', path: '/v2/models/:model', role: 'client' },
  { method: 'GET', path: '/v2/models/:model/ready', role: 'client' },
  { method: 'POST', path: '/v2/models/:model/infer', role: 'client', body: true },
  { method: 'GET', path: '/openapi.json', role: 'none' },
  { method: 'GET', path: '/docs/:asset', role: 'none' },
  { method: 'GET', path: '/fhir/metadata', role: 'none' },
  { method: 'POST', path: '/fhir/RiskAssessment/$predict', role: 'client', body: true },
  // CDS Hooks calls carry the EHR's JWT, not a key
  { method: 'GET', path: '/cds-services', role: 'none' },
  { method: 'POST', path: '/cds-services/:service', role: 'none', body: true },
  { method: 'POST', path: '/cds-services/:service/feedback', role: 'none', body: true },
];

/** A valid NEWS2 instance. */
export const NEWS2 = NEWS2_INSTANCE;

export interface Tour {
  gateway: Gateway;
  /** its Redis key prefix */
  prefix: string;
  dataDir: string;
  keys: Record<'client' | 'reviewer' | 'admin', string>;
  /** seeded ids: a job held for review, a completed batch run */
  seeded: { job: string; run: string };
  call: TestGateway['call'];
  close(): Promise<void>;
}

export async function startTour(name: string, logger: Logger = createLogger('silent')): Promise<Tour> {
  const dataDir = await tempDir('tour');
  await mkdir(path.join(dataDir, 'clients/client/inputs'), { recursive: true });
  await writeFile(
    path.join(dataDir, 'clients/client/inputs/rows.ndjson'),
    `${[0, 1].map((i) => JSON.stringify({ id: `row-${i}`, ...NEWS2 })).join('\n')}\n`,
  );
  const gw = await buildGateway({
    prefix: makePrefix(name),
    workers: ['inference', 'batch'],
    only: ['news2', 'deterioration', 'note-triage', 'readmission'],
    warmupRuns: 2,
    dataDir,
    maxBodyBytes: 256 * 1024,
    logger,
  });
  const { gateway, keys, prefix, call } = gw;

  const job = await call('POST', '/v1/models/note-triage/jobs', keys.client, {
    input: { text: 'Crushing chest pain, troponin raised.' },
  });
  if (job.status !== 202) throw new Error(`seed job: ${job.status} ${job.text}`);
  await waitFor(
    async () => (await call('GET', `/v1/jobs/${job.body.id}`, keys.client)).body?.state === 'awaiting_review',
    'the seeded job to await review',
  );
  const run = await call('POST', '/v1/models/news2/batches', keys.client, {
    input: { path: 'inputs/rows.ndjson', format: 'ndjson' },
  });
  if (run.status !== 202) throw new Error(`seed run: ${run.status} ${run.text}`);
  await waitFor(
    async () => (await call('GET', `/v1/batches/${run.body.id}`, keys.client)).status === 200,
    'the seeded run to complete',
    30_000,
  );
  return {
    gateway,
    prefix,
    dataDir,
    keys,
    seeded: { job: job.body.id, run: run.body.id },
    call,
    async close() {
      await gw.close();
      await deletePrefix(prefix);
      await removeDir(dataDir);
    },
  };
}
