/**
 * The one test gateway: built through the same composition root as main() (real Redis, BullMQ, onnxruntime-node,
 * worker threads), on a Redis prefix of its own, with known API keys. Options cover what each test needs; the rest
 * is the same for every test.
 *
 * Latency budgets: unless a test keeps the manifests' budgets (`realBudgets`, for tests about deadlines), every sync
 * model gets GENEROUS_BUDGET_MS, so a machine whose cores are busy still answers in time. `sync` overrides any field
 * of the sync sections on top of that.
 */

import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import type { Logger } from 'pino';
import type { CdsClientsConfig } from '../../src/cds-hooks/jwt.ts';
import { type ComposeOptions, composeGateway, type Gateway, type GatewayConfig } from '../../src/gateway.ts';
import type { ApiKeyStore } from '../../src/platform/auth.ts';
import type { CallbackPolicy } from '../../src/platform/config.ts';
import { loadConfig } from '../../src/platform/config.ts';
import { createLogger } from '../../src/platform/logger.ts';
import type { TokenVerifier } from '../../src/platform/oidc.ts';
import type { RateLimitSettings } from '../../src/platform/rate-limit.ts';
import { type LoadedModel, loadModels } from '../../src/registry/load.ts';
import type { Manifest } from '../../src/registry/schema.ts';
import type { RuntimeFactory } from '../../src/serving/runners.ts';
import type { WorkerKind } from '../../workers/index.ts';
import { httpCall, type Reply } from './http.ts';
import { makeKeys, type TestKeys } from './keys.ts';
import { GENEROUS_BUDGET_MS, MODELS_DIR, SYNC_CEILING_MS } from './models.ts';
import { deletePrefix, makePrefix, REDIS_URL } from './redis.ts';
import type { VersionFaults } from './runtimes.ts';
import { waitFor } from './wait.ts';

export type SyncSettings = NonNullable<Manifest['sync']>;

/** a pressure threshold no busy test machine reaches (see src/platform/pressure.ts) */
export const PRESSURE_OFF_MS = 10_000;

/** The workers the async tier needs in process. */
export const ASYNC_WORKERS: WorkerKind[] = ['inference', 'callbacks', 'maintenance'];

export interface GatewayOptions {
  /** a Redis prefix shared with other gateways or processes (the caller deletes it); default: one of its own, deleted on close */
  prefix?: string;
  /** default: a fresh makeKeys() */
  keys?: TestKeys;
  /** the API keys the gateway knows, when a test names its own (default: `keys.store`) */
  keyStore?: ApiKeyStore;
  /** bearer tokens beside the keys */
  tokens?: TokenVerifier;
  /** per-client rate limits (none when absent) */
  rateLimits?: RateLimitSettings;
  /** serve the app on a real socket on 127.0.0.1 (real peer addresses): `url` is set and `call` goes through it */
  listen?: boolean;
  /** workers run in this process (default none) */
  workers?: WorkerKind[];
  /** default: the bundled models */
  modelsDir?: string;
  /** only these models (by name) */
  only?: string[];
  /** keep the manifests' latency budgets (tests about deadlines); default GENEROUS_BUDGET_MS for every sync model */
  realBudgets?: boolean;
  /** overrides of the manifests' sync sections, by model name; `*` applies to every model */
  sync?: Record<string, Partial<SyncSettings>>;
  /** the batch data dir (default the config's) */
  dataDir?: string;
  /** the monitoring taps on the scorer (TRIAGE_MONITORING; default the config's: on) */
  monitoring?: boolean;
  /** callback delivery (default: 4 attempts, 50 ms backoff, 2 s timeout, plain http to loopback) */
  callbacks?: Partial<CallbackPolicy>;
  runtimeFactory?: RuntimeFactory;
  /** the REAL onnx runtime with per-version faults (sets the runtime factory; every gate is opened on close) */
  faults?: VersionFaults;
  /** default: silent */
  logger?: Logger;
  now?: () => number;
  random?: () => number;
  routingRefreshMs?: number;
  /** enables POST /v1/admin/reload, re-reading `modelsDir` (with the same budget overrides) */
  reload?: boolean;
  workerLockMs?: number;
  workerConcurrency?: number;
  missedAfterMs?: number;
  maxBodyBytes?: number;
  accessLog?: boolean;
  openOpsEndpoints?: boolean;
  warmupRuns?: number;
  warmupPolicy?: 'refuse' | 'warn';
  /** the event-loop pressure threshold (ms); by default one no busy test machine reaches */
  pressureThresholdMs?: number;
  /** early refusal of sync scoring (TRIAGE_ADMISSION_LAG_MS); by default off: a busy test machine is not overload */
  admissionLagMs?: number;
  /** where the admission reads the loop's lag (a test drives it); default the gateway's Pressure */
  loopLag?: ComposeOptions['loopLag'];
  /** admission settings over the defaults */
  admission?: ComposeOptions['admission'];
  /** batch chunks wait while the event loop is busier than this (0-1); by default never on utilization */
  batchPaceUtilization?: number;
  redisReady?: () => Promise<boolean>;
  /** Redis command timeout (default 5 s: a busy machine is not an outage; the production default is 500 ms) */
  redisCommandTimeoutMs?: number;
  /** another Redis URL than TRIAGE_REDIS_URL (e.g. a proxy in front of it) */
  redisUrl?: string;
  /** EHRs registered for CDS Hooks */
  cdsClients?: CdsClientsConfig;
  /** any other configuration (FHIR servers, HL7 …), applied last */
  config?: Partial<GatewayConfig>;
}

export interface TestGateway {
  gateway: Gateway;
  app: Gateway['app'];
  deps: Gateway['deps'];
  keys: TestKeys;
  prefix: string;
  /** http://127.0.0.1:<port> with `listen`, else '' */
  url: string;
  call(
    method: string,
    url: string,
    key: string | undefined,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<Reply>;
  /** POST /v1/models/:model/predict with `{instances}` */
  predict(model: string, key: string, instances: unknown[], headers?: Record<string, string>): Promise<Reply>;
  /** the Prometheus exposition (GET /metrics) */
  metrics(): Promise<string>;
  close(): Promise<void>;
}

async function load(options: GatewayOptions): Promise<LoadedModel[]> {
  let models = await loadModels(options.modelsDir ?? MODELS_DIR, SYNC_CEILING_MS);
  if (options.only) models = models.filter((m) => options.only?.includes(m.manifest.name));
  for (const m of models) {
    if (!m.manifest.sync) continue;
    if (!options.realBudgets) m.manifest.sync.latencyBudgetMs = GENEROUS_BUDGET_MS;
    Object.assign(m.manifest.sync, options.sync?.['*'], options.sync?.[m.manifest.name]);
  }
  return models;
}

export async function buildGateway(options: GatewayOptions = {}): Promise<TestGateway> {
  const keys = options.keys ?? makeKeys();
  const prefix = options.prefix ?? makePrefix('gw');
  const factory = options.runtimeFactory ?? options.faults?.factory();
  const config: GatewayConfig = {
    ...loadConfig({}),
    // a namespace of its own: nothing a test does touches other tests' queues, schedules or records
    redisPrefix: prefix,
    workers: options.workers ?? [],
    warmupRuns: options.warmupRuns ?? 3,
    warmupPolicy: options.warmupPolicy ?? 'warn',
    accessLog: options.accessLog ?? true,
    openOpsEndpoints: options.openOpsEndpoints ?? true,
    maxBodyBytes: options.maxBodyBytes ?? 1024 * 1024,
    onnxThreads: 1,
    workerConcurrency: options.workerConcurrency ?? 4,
    callbacks: {
      attempts: 4,
      backoffMs: 50,
      timeoutMs: 2000,
      httpHosts: ['127.0.0.1', 'localhost'],
      ...options.callbacks,
    },
    // sweeps are run by the tests that want them
    maintenanceIntervalMs: 3_600_000,
    // a busy test machine is not bedside pressure: only the bedside tests lower it (deferred work must not yield here)
    pressureThresholdMs: options.pressureThresholdMs ?? PRESSURE_OFF_MS,
    admissionLagMs: options.admissionLagMs ?? 0,
    // nor is a test process's busy event loop: batch runs pace on utilization only where a test asks
    batchPaceUtilization: options.batchPaceUtilization ?? 1,
    // batch threads at the process's priority: other work on a busy test machine must not starve a run
    batchNice: 0,
    // likewise the shadow thread: a test waiting for pairs must not wait on the machine's other work
    shadowNice: 0,
    // a busy test machine is not a Redis outage: only the outage tests keep the production timeout
    redisCommandTimeoutMs: options.redisCommandTimeoutMs ?? 5_000,
    ...(options.dataDir !== undefined ? { dataDir: options.dataDir } : {}),
    ...(options.monitoring !== undefined ? { monitoring: options.monitoring } : {}),
    ...(options.missedAfterMs !== undefined ? { batchMissedAfterMs: options.missedAfterMs } : {}),
    ...(options.workerLockMs !== undefined ? { workerLockMs: options.workerLockMs } : {}),
    ...options.config,
  };
  const gateway = await composeGateway({
    config,
    logger: options.logger ?? createLogger('silent'),
    redisUrl: options.redisUrl ?? REDIS_URL,
    keys: options.keyStore ?? keys.store,
    models: await load(options),
    ...(options.tokens ? { tokens: options.tokens } : {}),
    ...(options.rateLimits ? { rateLimits: options.rateLimits } : {}),
    ...(options.cdsClients ? { cdsClients: options.cdsClients } : {}),
    ...(options.loopLag ? { loopLag: options.loopLag } : {}),
    ...(options.admission ? { admission: options.admission } : {}),
    // default: the factory main() uses (ONNX in process, cloud versions behind resilience)
    ...(factory ? { runtimeFactory: factory } : {}),
    ...(options.now ? { now: options.now } : {}),
    ...(options.random ? { random: options.random } : {}),
    ...(options.routingRefreshMs !== undefined ? { routingRefreshMs: options.routingRefreshMs } : {}),
    ...(options.reload ? { reloadModels: () => load(options) } : {}),
  });
  const { app, deps } = gateway;
  if (options.redisReady) deps.redisReady = options.redisReady;
  const server = options.listen
    ? serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0, createServer: gateway.createServer })
    : undefined;
  if (server) await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const url = server ? `http://127.0.0.1:${(server.address() as AddressInfo).port}` : '';
  const client = server ? { request: (path: string, init: RequestInit) => fetch(`${url}${path}`, init) } : app;
  const call: TestGateway['call'] = (method, path, key, body, headers = {}) =>
    httpCall(client, method, path, key, body, headers);
  return {
    gateway,
    app,
    deps,
    keys,
    prefix,
    url,
    call,
    predict: (model, key, instances, headers = {}) =>
      call('POST', `/v1/models/${model}/predict`, key, { instances }, headers),
    async metrics() {
      const res = await call('GET', '/metrics', undefined);
      if (res.status !== 200) throw new Error(`/metrics: ${res.status}`);
      return res.text;
    },
    async close() {
      options.faults?.openAll();
      if (server) {
        if ('closeAllConnections' in server) server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
      // runs held or delayed by a test runtime finish before their sessions are released
      await waitFor(() => deps.sync.inFlight() === 0, 'in-flight requests to finish');
      await gateway.close();
      if (options.prefix === undefined) await deletePrefix(prefix);
    },
  };
}
