/**
 * Builds a real app for tests: the bundled ONNX models in real onnxruntime-node sessions, a real Redis behind
 * /readyz, real metrics and known API keys. The only stand-in is the optional runtime wrapper below, which runs the
 * REAL onnx runtime but can count, delay or hold its runs (to make overload and deadlines deterministic).
 */
import { randomBytes } from 'node:crypto';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Hono } from 'hono';
import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import YAML from 'yaml';
import { composeGateway, type GatewayConfig } from '../src/compose.ts';
import type { AppDeps, AppEnv } from '../src/context.ts';
import { ApiKeyStore, hashKey } from '../src/platform/auth.ts';
import { loadConfig } from '../src/platform/config.ts';
import { createLogger } from '../src/platform/logger.ts';
import { loadModels } from '../src/registry/load.ts';
import type { Manifest } from '../src/registry/schema.ts';
import type { ModelRuntime } from '../src/runtime/types.ts';
import { onnxRuntimeFactory, type RuntimeFactory } from '../src/serving/runners.ts';

export const MODELS_DIR = fileURLToPath(new URL('../models/', import.meta.url));
export const REDIS_URL = process.env.TRIAGE_REDIS_URL || 'redis://127.0.0.1:6379';
export const SYNC_CEILING_MS = 5_000;
/** a pressure threshold no busy test machine reaches (see src/platform/pressure.ts) */
export const PRESSURE_OFF_MS = 10_000;

export type SyncSettings = NonNullable<Manifest['sync']>;

export interface TestKeys {
  /** client, every model */
  client: string;
  /** client, only news2 */
  news2Only: string;
  reviewer: string;
  admin: string;
}

export interface TestAppOptions {
  modelsDir?: string;
  runtimeFactory?: RuntimeFactory;
  /** overrides of the manifests' sync sections, by model name; `*` applies to every model */
  sync?: Record<string, Partial<SyncSettings>>;
  maxBodyBytes?: number;
  logger?: Logger;
  accessLog?: boolean;
  openOpsEndpoints?: boolean;
  warmupRuns?: number;
  warmupPolicy?: 'refuse' | 'warn';
  redisReady?: () => Promise<boolean>;
  /** the event-loop pressure threshold (ms); by default one no busy test machine reaches */
  pressureThresholdMs?: number;
  /** another Redis URL than TRIAGE_REDIS_URL (e.g. a proxy in front of it) */
  redisUrl?: string;
}

export interface TestApp {
  app: Hono<AppEnv>;
  deps: AppDeps;
  keys: TestKeys;
  close(): Promise<void>;
}

export async function buildTestApp(options: TestAppOptions = {}): Promise<TestApp> {
  const loaded = await loadModels(options.modelsDir ?? MODELS_DIR, SYNC_CEILING_MS);
  for (const m of loaded) {
    const override = { ...options.sync?.['*'], ...options.sync?.[m.manifest.name] };
    if (m.manifest.sync) Object.assign(m.manifest.sync, override);
  }
  const keys: TestKeys = {
    client: `test_client_${randomBytes(12).toString('hex')}`,
    news2Only: `test_news2_${randomBytes(12).toString('hex')}`,
    reviewer: `test_reviewer_${randomBytes(12).toString('hex')}`,
    admin: `test_admin_${randomBytes(12).toString('hex')}`,
  };
  const store = new ApiKeyStore([
    { id: 'test-client', role: 'client', sha256: hashKey(keys.client), models: ['*'] },
    { id: 'test-news2-client', role: 'client', sha256: hashKey(keys.news2Only), models: ['news2'] },
    { id: 'test-reviewer', role: 'reviewer', sha256: hashKey(keys.reviewer), models: ['*'] },
    { id: 'test-admin', role: 'admin', sha256: hashKey(keys.admin), models: ['*'] },
  ]);
  const logger = options.logger ?? createLogger('silent');
  const redisPrefix = `{triage-test-${process.pid}-${randomBytes(4).toString('hex')}}`;
  // the same composition root as main(), without workers: what is tested is what runs
  const config: GatewayConfig = {
    ...loadConfig({}),
    // a busy test machine is not bedside pressure: only the bedside tests lower it (deferred work must not yield here)
    pressureThresholdMs: options.pressureThresholdMs ?? PRESSURE_OFF_MS,
    // a namespace of its own: nothing these tests do touches other tests' queues, schedules or records
    redisPrefix,
    workers: [],
    maxBodyBytes: options.maxBodyBytes ?? 1024 * 1024,
    openOpsEndpoints: options.openOpsEndpoints ?? true,
    accessLog: options.accessLog ?? true,
    warmupRuns: options.warmupRuns ?? 5,
    warmupPolicy: options.warmupPolicy ?? 'refuse',
  };
  const gateway = await composeGateway({
    config,
    logger,
    redisUrl: options.redisUrl ?? REDIS_URL,
    keys: store,
    models: loaded,
    runtimeFactory: options.runtimeFactory ?? onnxRuntimeFactory(1),
  });
  const { app, deps } = gateway;
  if (options.redisReady) deps.redisReady = options.redisReady;
  return {
    app,
    deps,
    keys,
    async close() {
      // runs held or delayed by a test runtime finish before their sessions are released
      await waitFor(() => deps.sync.inFlight() === 0, 'in-flight requests to finish');
      await gateway.close();
      await deleteRedisPrefix(redisPrefix);
    },
  };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `condition` every `everyMs`; throws (naming `what`) rather than hangs if it is still false after `timeoutMs`. */
export async function waitFor(
  condition: () => boolean | Promise<boolean>,
  what: string | (() => string),
  timeoutMs = 10_000,
  everyMs = 2,
): Promise<void> {
  const started = Date.now();
  while (!(await condition())) {
    if (Date.now() - started > timeoutMs) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`);
    }
    await sleep(everyMs);
  }
}

/** A Redis Cluster-style prefix (one hash tag) unique to this test run. */
export function makePrefix(name: string): string {
  return `{triage-test-${name}-${randomBytes(6).toString('hex')}}`;
}

/** Deletes every key under `prefix` (job records, idempotency keys, audit, BullMQ queues, schedules). */
export async function deletePrefix(prefix: string): Promise<void> {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  redis.on('error', () => {});
  try {
    let cursor = '0';
    do {
      const pattern = `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`;
      const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await redis.unlink(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

/** A request through `app.request()`: JSON in and out, the key as a bearer token; the body parsed when it is JSON. */
export async function httpCall(
  app: { request(url: string, init: RequestInit): Response | Promise<Response> },
  method: string,
  url: string,
  key: string | undefined,
  body?: unknown,
  headers: Record<string, string> = {},
) {
  const res = await app.request(url, {
    method,
    headers: {
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      ...(key ? { authorization: `Bearer ${key}` } : {}),
      ...headers,
    },
    ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    parsed = undefined;
  }
  // biome-ignore lint/suspicious/noExplicitAny: test bodies are read loosely, as the tests assert their fields
  return { status: res.status, headers: res.headers, body: parsed as any, text };
}

/** The name the first test files used for deletePrefix. */
export const deleteRedisPrefix = deletePrefix;

/**
 * Copies the named bundled model folders into a temp models dir, applying `edit` to each parsed model.yaml (a temp
 * copy, so a model being added to models/ meanwhile never reaches the tests). Remove it with `removeDir`.
 */
export async function tempModels(
  // biome-ignore lint/suspicious/noExplicitAny: the manifest is edited as plain YAML data
  edits: Record<string, ((manifest: any) => void) | null>,
): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'triage-models-'));
  for (const [name, edit] of Object.entries(edits)) {
    const target = path.join(dir, name);
    await cp(path.join(MODELS_DIR, name), target, { recursive: true });
    if (edit) {
      const file = path.join(target, 'model.yaml');
      const manifest = YAML.parse(await readFile(file, 'utf8'));
      edit(manifest);
      await writeFile(file, YAML.stringify(manifest));
    }
  }
  return dir;
}

export async function removeDir(dir: string | undefined): Promise<void> {
  if (dir) await rm(dir, { recursive: true, force: true });
}

/**
 * Wraps the REAL onnx runtime: every run is recorded, and while `armed` a run can be delayed (`delayMs`) or held
 * until `release()` (after `hold()`). Unarmed (e.g. during warm-up) it passes straight through.
 */
export class RuntimeControl {
  armed = false;
  delayMs = 0;
  /** the next armed run hands the real session a truncated input, so the real runtime fails */
  corruptNext = false;
  /** runs made while armed: model name and rows */
  readonly runs: Array<{ model: string; rows: number }> = [];
  #gate: Promise<void> | undefined;
  #open: (() => void) | undefined;
  #entered: Array<() => void> = [];

  constructor(options: { armed?: boolean; delayMs?: number } = {}) {
    this.armed = options.armed ?? false;
    this.delayMs = options.delayMs ?? 0;
  }

  hold(): void {
    this.#gate = new Promise((resolve) => {
      this.#open = resolve;
    });
  }

  release(): void {
    this.#open?.();
    this.#gate = undefined;
    this.#open = undefined;
  }

  /** resolves when the next armed run starts */
  nextRun(): Promise<void> {
    return new Promise((resolve) => this.#entered.push(resolve));
  }

  factory(): RuntimeFactory {
    const real = onnxRuntimeFactory(1);
    return async (model, version) => {
      const runtime = await real(model, version);
      // only the primary is counted and held: shadow versions (deterioration mirrors v2) run untouched
      if (version.version !== model.manifest.routing.primary) return runtime;
      const name = model.manifest.name;
      const wrapped: ModelRuntime = {
        kind: 'onnx-test-wrapper',
        run: async (input, rows) => {
          if (this.armed) {
            this.runs.push({ model: name, rows });
            for (const resolve of this.#entered.splice(0)) resolve();
            if (this.#gate) await this.#gate;
            if (this.delayMs > 0) await sleep(this.delayMs);
            if (this.corruptNext) {
              this.corruptNext = false;
              return runtime.run(input.subarray(0, 1), rows);
            }
          }
          return runtime.run(input, rows);
        },
        close: () => runtime.close(),
      };
      return wrapped;
    };
  }
}

/** A pino destination that keeps every log line, for asserting what is (not) logged. */
export function captureLogs(level = 'info'): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return { logger: createLogger(level, { write: (line: string) => void lines.push(line) }), lines };
}

/** POST a JSON body to a model's predict endpoint. */
export function predict(
  app: Hono<AppEnv>,
  model: string,
  body: unknown,
  key: string | undefined,
  headers: Record<string, string> = {},
): Promise<Response> {
  return Promise.resolve(
    app.request(`/v1/models/${model}/predict`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(key ? { authorization: `Bearer ${key}` } : {}),
        ...headers,
      },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    }),
  );
}

/** The value of one sample in a Prometheus exposition: `name` with (at least) `labels`; undefined when absent. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const match = /^([A-Za-z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const body = match[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => body.includes(`${k}="${v}"`))) return Number(match[3]);
  }
  return undefined;
}

/** Asserting helper: the response is RFC 9457 problem+json; returns its parsed body. */
export async function problemBody(res: Response): Promise<Record<string, unknown>> {
  const type = res.headers.get('content-type') ?? '';
  if (!type.startsWith('application/problem+json')) {
    throw new Error(`expected application/problem+json, got "${type}" (status ${res.status}): ${await res.text()}`);
  }
  return (await res.json()) as Record<string, unknown>;
}
