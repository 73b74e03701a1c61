/**
 * Shared helpers of the batch-tier tests: gateways built through the real composition root (real Redis, BullMQ,
 * onnxruntime, worker threads), a Redis prefix and temp data/model directories per test file (removed afterwards),
 * generated inputs, bounded polling, and readers for the NDJSON the runs write.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Queue } from 'bullmq';
import type { Logger } from 'pino';
import YAML from 'yaml';
import { composeGateway, type Gateway, type GatewayConfig } from '../src/compose.ts';
import { ApiKeyStore, hashKey } from '../src/platform/auth.ts';
import { loadConfig } from '../src/platform/config.ts';
import { createLogger } from '../src/platform/logger.ts';
import { loadModels } from '../src/registry/load.ts';
import type { WorkerKind } from '../workers/index.ts';
import {
  deletePrefix,
  httpCall,
  makePrefix,
  metricValue,
  PRESSURE_OFF_MS,
  REDIS_URL,
  removeDir,
  sleep,
  tempModels,
  waitFor,
} from './support.ts';

export { MODELS_DIR } from './support.ts';
export { deletePrefix, makePrefix, metricValue, REDIS_URL, removeDir, sleep, tempModels, waitFor };
export const REPO_DIR = fileURLToPath(new URL('../', import.meta.url));
export const SYNTHEA_OBSERVATIONS = fileURLToPath(
  new URL('../../shared/data/synthea/vital-sign-observations.ndjson', import.meta.url),
);

export interface BatchKeys {
  /** client, every model */
  client: string;
  /** another client, every model */
  other: string;
  /** a client that may only call deterioration */
  deteriorationOnly: string;
  reviewer: string;
  admin: string;
  store: ApiKeyStore;
  /** the same keys as a TRIAGE_API_KEYS document (for worker processes) */
  yaml: string;
}

export function makeKeys(): BatchKeys {
  const key = (role: string) => `trg_${role}_${randomBytes(16).toString('hex')}`;
  const k = {
    client: key('c'),
    other: key('o'),
    deteriorationOnly: key('d'),
    reviewer: key('r'),
    admin: key('adm'),
  };
  const entries = [
    { id: 'batch-client', role: 'client' as const, sha256: hashKey(k.client), models: ['*'] },
    { id: 'batch-other', role: 'client' as const, sha256: hashKey(k.other), models: ['*'] },
    { id: 'batch-det', role: 'client' as const, sha256: hashKey(k.deteriorationOnly), models: ['deterioration'] },
    { id: 'batch-reviewer', role: 'reviewer' as const, sha256: hashKey(k.reviewer), models: ['*'] },
    { id: 'batch-admin', role: 'admin' as const, sha256: hashKey(k.admin), models: ['*'] },
  ];
  return { ...k, store: new ApiKeyStore(entries), yaml: YAML.stringify({ keys: entries }) };
}

export function tempDir(kind: string): Promise<string> {
  return mkdtemp(path.join(tmpdir(), `triage-batch-${kind}-`));
}

/** A logger that keeps every line (to assert that no row values or ids are logged). */
export function captureLogger(level = 'debug'): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return { logger: createLogger(level, { write: (line: string) => void lines.push(line) }), lines };
}

export interface Reply {
  status: number;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: test responses are read field by field
  body: any;
  text: string;
}

export interface TestGateway {
  gateway: Gateway;
  dataDir: string;
  call(
    method: string,
    url: string,
    key: string | undefined,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<Reply>;
  close(): Promise<void>;
}

export interface BatchGatewayOptions {
  prefix: string;
  keys: BatchKeys;
  modelsDir: string;
  dataDir: string;
  workers?: WorkerKind[];
  logger?: Logger;
  now?: () => number;
  lockMs?: number;
  missedAfterMs?: number;
}

/** A gateway through the real composition root; `workers: ['batch']` runs the batch worker in this process. */
export async function buildGateway(options: BatchGatewayOptions): Promise<TestGateway> {
  const models = await loadModels(options.modelsDir, 5000);
  const config: GatewayConfig = {
    ...loadConfig({}),
    // a busy test machine is not bedside pressure: only the bedside tests lower it (deferred work must not yield here)
    pressureThresholdMs: PRESSURE_OFF_MS,
    redisPrefix: options.prefix,
    workers: options.workers ?? [],
    warmupRuns: 2,
    warmupPolicy: 'warn',
    accessLog: true,
    openOpsEndpoints: true,
    onnxThreads: 1,
    maintenanceIntervalMs: 3_600_000,
    dataDir: options.dataDir,
    ...(options.missedAfterMs !== undefined ? { batchMissedAfterMs: options.missedAfterMs } : {}),
    ...(options.lockMs !== undefined ? { workerLockMs: options.lockMs } : {}),
  };
  const gateway = await composeGateway({
    config,
    logger: options.logger ?? createLogger('silent'),
    redisUrl: REDIS_URL,
    keys: options.keys.store,
    models,
    ...(options.now ? { now: options.now } : {}),
  });
  return {
    gateway,
    dataDir: options.dataDir,
    call: (method, url, key, body, headers = {}) => httpCall(gateway.app, method, url, key, body, headers),
    close: () => gateway.close(),
  };
}

/** The X-Progress header of a run that is still going. */
export const PROGRESS = /^(queued|running): \d+ rows read, \d+ scored, \d+ failed$/;

/**
 * Polls GET /v1/batches/:id until it is no longer 202, checking the 202 shape (X-Progress, Retry-After) every time
 * one is seen. Returns the final reply and how many 202s were seen.
 */
export async function waitForRun(
  gw: TestGateway,
  key: string,
  id: string,
  timeoutMs = 30_000,
  onProgress?: (reply: Reply) => void,
): Promise<{ final: Reply; accepted: number }> {
  let last: Reply | undefined;
  let accepted = 0;
  await waitFor(
    async () => {
      last = await gw.call('GET', `/v1/batches/${id}`, key);
      if (last.status !== 202) return true;
      accepted++;
      const progress = last.headers.get('x-progress') ?? '';
      if (!PROGRESS.test(progress)) throw new Error(`bad X-Progress "${progress}"`);
      const retry = last.headers.get('retry-after') ?? '';
      if (!/^\d+$/.test(retry) || Number(retry) < 1) throw new Error(`bad Retry-After "${retry}"`);
      onProgress?.(last);
      return false;
    },
    () => `run ${id} to finish (last: ${last?.status} ${last?.text.slice(0, 200)})`,
    timeoutMs,
  );
  return { final: last as Reply, accepted };
}

/** Downloads a file by its (absolute) manifest URL and parses it as NDJSON. */
export async function download(gw: TestGateway, key: string, url: string): Promise<Array<Record<string, unknown>>> {
  const res = await gw.call('GET', url, key);
  if (res.status !== 200) throw new Error(`GET ${url}: ${res.status} ${res.text.slice(0, 300)}`);
  if (!(res.headers.get('content-type') ?? '').startsWith('application/fhir+ndjson')) {
    throw new Error(`GET ${url}: content-type ${res.headers.get('content-type')}`);
  }
  return parseNdjson(res.text);
}

export function parseNdjson(text: string): Array<Record<string, unknown>> {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/** The row id an error-file OperationOutcome names (`diagnostics: "row <id>: …"`). */
export function outcomeRowId(outcome: Record<string, unknown>): string {
  const issue = (outcome.issue as Array<{ diagnostics?: string }> | undefined)?.[0];
  const match = /^row (\S+): /.exec(issue?.diagnostics ?? '');
  if (outcome.resourceType !== 'OperationOutcome' || !match) {
    throw new Error(`not an OperationOutcome naming a row: ${JSON.stringify(outcome).slice(0, 200)}`);
  }
  return match[1] as string;
}

/** A valid, varied NEWS2 row (deterministic in `i`). */
export function news2Row(i: number): Record<string, unknown> {
  return {
    respirationRate: 8 + (i % 20),
    spo2: 88 + (i % 13),
    onOxygen: i % 7 === 0,
    systolicBP: 85 + ((i * 7) % 150),
    pulse: 40 + ((i * 3) % 100),
    consciousness: i % 11 === 0 ? 'voice' : 'alert',
    temperature: Math.round((34.5 + (i % 50) / 10) * 10) / 10,
  };
}

/** True when a queue has nothing waiting, delayed or running. */
export async function queueIdle(queue: Queue): Promise<boolean> {
  const c = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'waiting-children');
  return Object.values(c).every((n) => n === 0);
}
