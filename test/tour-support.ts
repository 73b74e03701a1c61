/**
 * A tour of every endpoint, for the tests that must cover all of them (the fuzz test, the log scan): a gateway through
 * the real composition root with the inference and batch workers, keys of every role, a data directory with one
 * client input, and seeded records to point the id parameters at (a job held for review, a completed batch run).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { composeGateway, type Gateway, type GatewayConfig } from '../src/compose.ts';
import { ApiKeyStore, hashKey } from '../src/platform/auth.ts';
import { loadConfig } from '../src/platform/config.ts';
import { createLogger } from '../src/platform/logger.ts';
import { loadModels } from '../src/registry/load.ts';
import {
  deletePrefix,
  httpCall,
  MODELS_DIR,
  makePrefix,
  PRESSURE_OFF_MS,
  REDIS_URL,
  removeDir,
  waitFor,
} from './support.ts';

export interface Endpoint {
  method: string;
  /** with `:name` parameters */
  path: string;
  role: 'client' | 'reviewer' | 'admin' | 'none';
  /** true when it reads a JSON body */
  body?: boolean;
}

/** Every route the app mounts (29): a test that loops over these covers all of them. */
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
  { method: 'POST', path: '/v1/admin/reload', role: 'admin', body: true },
];

export const NEWS2 = {
  respirationRate: 16,
  spo2: 97,
  onOxygen: false,
  systolicBP: 120,
  pulse: 70,
  consciousness: 'alert',
  temperature: 37,
};

export interface Tour {
  gateway: Gateway;
  /** its Redis key prefix */
  prefix: string;
  dataDir: string;
  keys: Record<'client' | 'reviewer' | 'admin', string>;
  /** seeded ids: a job held for review, a completed batch run */
  seeded: { job: string; run: string };
  call: (
    method: string,
    url: string,
    key: string | undefined,
    body?: unknown,
    headers?: Record<string, string>,
  ) => ReturnType<typeof httpCall>;
  close(): Promise<void>;
}

export async function startTour(name: string, logger: Logger = createLogger('silent')): Promise<Tour> {
  const key = (role: string) => `trg_${role}_${randomBytes(16).toString('hex')}`;
  const keys = { client: key('client'), reviewer: key('reviewer'), admin: key('admin') };
  const store = new ApiKeyStore([
    {
      id: 'tour-client',
      role: 'client',
      sha256: hashKey(keys.client),
      callbackHosts: ['127.0.0.1'],
      callbackSecret: `whsec_${randomBytes(24).toString('base64')}`,
    },
    { id: 'tour-reviewer', role: 'reviewer', sha256: hashKey(keys.reviewer) },
    { id: 'tour-admin', role: 'admin', sha256: hashKey(keys.admin) },
  ]);
  const prefix = makePrefix(name);
  const dataDir = await mkdtemp(path.join(tmpdir(), 'triage-tour-'));
  await mkdir(path.join(dataDir, 'clients/tour-client/inputs'), { recursive: true });
  await writeFile(
    path.join(dataDir, 'clients/tour-client/inputs/rows.ndjson'),
    `${[0, 1].map((i) => JSON.stringify({ id: `row-${i}`, ...NEWS2 })).join('\n')}\n`,
  );
  const models = (await loadModels(MODELS_DIR, 5000)).filter((m) =>
    ['news2', 'deterioration', 'note-triage', 'readmission'].includes(m.manifest.name),
  );
  const config: GatewayConfig = {
    ...loadConfig({}),
    // a busy test machine is not bedside pressure: only the bedside tests lower it (deferred work must not yield here)
    pressureThresholdMs: PRESSURE_OFF_MS,
    redisPrefix: prefix,
    workers: ['inference', 'batch'],
    warmupRuns: 2,
    warmupPolicy: 'warn',
    accessLog: true,
    openOpsEndpoints: true,
    onnxThreads: 1,
    maintenanceIntervalMs: 3_600_000,
    dataDir,
    maxBodyBytes: 256 * 1024,
  };
  const gateway = await composeGateway({ config, logger, redisUrl: REDIS_URL, keys: store, models });
  const call: Tour['call'] = (method, url, k, body, headers = {}) =>
    httpCall(gateway.app, method, url, k, body, headers);

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
      await gateway.close();
      await deletePrefix(prefix);
      await removeDir(dataDir);
    },
  };
}
