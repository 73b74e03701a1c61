/**
 * Shared helpers of the release tests (shadow mode, canary and rollback, manifest reload): gateways built through the
 * real composition root on a Redis prefix of their own, temp copies of the deterioration model folder with edited
 * manifests, a wrapper around the REAL onnx runtime that can gate or break one version (the real session still
 * scores, or itself fails on a truncated input), scoring straight from the ONNX files for expected values, and a
 * scan of what the shadow recorder keeps in Redis.
 */
import { randomBytes } from 'node:crypto';
import { cp, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import * as ort from 'onnxruntime-node';
import YAML from 'yaml';
import { composeGateway, type Gateway, type GatewayConfig } from '../src/compose.ts';
import { ApiKeyStore, hashKey } from '../src/platform/auth.ts';
import { loadConfig } from '../src/platform/config.ts';
import { createLogger } from '../src/platform/logger.ts';
import { type LoadedModel, loadModels } from '../src/registry/load.ts';
import type { ModelRuntime } from '../src/runtime/types.ts';
import { onnxRuntimeFactory, type RuntimeFactory } from '../src/serving/runners.ts';
import type { WorkerKind } from '../workers/index.ts';
import {
  deletePrefix,
  httpCall,
  MODELS_DIR,
  makePrefix,
  metricValue,
  PRESSURE_OFF_MS,
  REDIS_URL,
  removeDir,
  sleep,
  waitFor,
} from './support.ts';

export { deletePrefix, MODELS_DIR, makePrefix, metricValue, REDIS_URL, removeDir, sleep, waitFor };

export const MODEL = 'deterioration';
export const SYNC_CEILING_MS = 5_000;

function globEscape(s: string): string {
  return s.replace(/[*?[\]\\]/g, '\\$&');
}

async function scanKeys(redis: Redis, pattern: string): Promise<string[]> {
  const out: string[] = [];
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    out.push(...keys);
  } while (cursor !== '0');
  return out;
}

export interface StoredValue {
  key: string;
  type: string;
  /** every value the key holds, as Redis returns it (hash: field → value; stream: entry field → value) */
  values: Array<{ field?: string; value: string }>;
}

/** Every key under `prefix` whose name contains "shadow", whatever its type, with all it holds. */
export async function shadowStorage(prefix: string): Promise<StoredValue[]> {
  const redis = new Redis(REDIS_URL, { maxRetriesPerRequest: 1 });
  try {
    const out: StoredValue[] = [];
    for (const key of (await scanKeys(redis, `${globEscape(prefix)}*shadow*`)).sort()) {
      const type = await redis.type(key);
      const values: StoredValue['values'] = [];
      switch (type) {
        case 'hash':
          for (const [field, value] of Object.entries(await redis.hgetall(key))) values.push({ field, value });
          break;
        case 'list':
          for (const value of await redis.lrange(key, 0, -1)) values.push({ value });
          break;
        case 'set':
          for (const value of await redis.smembers(key)) values.push({ value });
          break;
        case 'zset':
          for (const value of await redis.zrange(key, '0', '-1')) values.push({ value });
          break;
        case 'string':
          values.push({ value: (await redis.get(key)) ?? '' });
          break;
        case 'stream':
          for (const [, fields] of await redis.xrange(key, '-', '+')) {
            for (let i = 0; i < fields.length; i += 2) {
              values.push({ field: fields[i] as string, value: fields[i + 1] as string });
            }
          }
          break;
        default:
          values.push({ value: `<unexpected type ${type}>` });
      }
      out.push({ key, type, values });
    }
    return out;
  } finally {
    redis.disconnect();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Keys

export interface ReleaseKeys {
  client: string;
  reviewer: string;
  admin: string;
  /** the principal id of `admin`, as the audit trail names it */
  adminId: string;
  store: ApiKeyStore;
}

export function makeKeys(): ReleaseKeys {
  const key = (role: string) => `trg_${role}_${randomBytes(16).toString('hex')}`;
  const k = { client: key('c'), reviewer: key('r'), admin: key('adm') };
  const adminId = `release-admin-${randomBytes(3).toString('hex')}`;
  return {
    ...k,
    adminId,
    store: new ApiKeyStore([
      { id: 'release-client', role: 'client', sha256: hashKey(k.client), models: ['*'] },
      { id: 'release-reviewer', role: 'reviewer', sha256: hashKey(k.reviewer), models: ['*'] },
      { id: adminId, role: 'admin', sha256: hashKey(k.admin), models: ['*'] },
    ]),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Temp model folders

// biome-ignore lint/suspicious/noExplicitAny: the manifest is edited as plain YAML data
export type ManifestEdit = (manifest: any) => void;

/**
 * Copies the bundled deterioration folder into a temp models dir, applying `edit` to its parsed model.yaml. The
 * latency budget is raised to 2 s first: these tests are about which version answers, not about speed, and a busy
 * 2-core machine must not turn an answer into a 504 (the tests that need a deadline say so themselves).
 */
export async function tempModels(edit?: ManifestEdit): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'triage-release-models-'));
  await cp(path.join(MODELS_DIR, MODEL), path.join(dir, MODEL), { recursive: true });
  await editManifest(dir, (m) => {
    m.sync.latencyBudgetMs = 2000;
    edit?.(m);
  });
  return dir;
}

/** Rewrites the temp deterioration manifest with `edit` applied (to the file on disk). */
export async function editManifest(dir: string, edit: ManifestEdit): Promise<void> {
  const file = path.join(dir, MODEL, 'model.yaml');
  const manifest = YAML.parse(await readFile(file, 'utf8'));
  edit(manifest);
  await writeFile(file, YAML.stringify(manifest));
}

// ---------------------------------------------------------------------------------------------------------------
// A faithful test double: the real onnx runtime, with per-version faults

type Mode = 'pass' | 'fail' | 'gate';

interface Gate {
  promise: Promise<void>;
  open: () => void;
}

function gate(): Gate {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { promise, open };
}

/**
 * Wraps the REAL onnx runtime of every model version. Per `model@version` a run can pass straight through, be held
 * at a gate until `open()`, or fail: the real session is handed a truncated input, so onnxruntime itself throws.
 * Creating a version's runtime can also be held (to keep a reload in progress). Warm-up runs happen before any fault
 * is set, so they pass.
 */
export class VersionFaults {
  #modes = new Map<string, Mode>();
  #gates = new Map<string, Gate>();
  #creates = new Map<string, Gate>();
  /** runs that reached a fault (gate or fail), per model@version */
  readonly faulted = new Map<string, number>();
  /** runtimes created, per model@version */
  readonly created = new Map<string, number>();

  #id(model: string, version: string): string {
    return `${model}@${version}`;
  }

  fail(model: string, version: string): void {
    this.#modes.set(this.#id(model, version), 'fail');
  }

  /** holds every run of the version from now on, until `open()` */
  hold(model: string, version: string): void {
    const id = this.#id(model, version);
    this.#modes.set(id, 'gate');
    if (!this.#gates.has(id)) this.#gates.set(id, gate());
  }

  /** lets held runs go and ends any fault on the version */
  open(model: string, version: string): void {
    const id = this.#id(model, version);
    this.#modes.set(id, 'pass');
    this.#gates.get(id)?.open();
    this.#gates.delete(id);
  }

  /** holds the creation of the version's runtime (e.g. during a reload) until `openCreate()` */
  holdCreate(model: string, version: string): void {
    this.#creates.set(this.#id(model, version), gate());
  }

  openCreate(model: string, version: string): void {
    const id = this.#id(model, version);
    this.#creates.get(id)?.open();
    this.#creates.delete(id);
  }

  /** opens every gate (for teardown) */
  openAll(): void {
    for (const g of [...this.#gates.values(), ...this.#creates.values()]) g.open();
    this.#gates.clear();
    this.#creates.clear();
    this.#modes.clear();
  }

  faultedRuns(model: string, version: string): number {
    return this.faulted.get(this.#id(model, version)) ?? 0;
  }

  factory(): RuntimeFactory {
    const real = onnxRuntimeFactory(1);
    return async (model, version) => {
      const id = this.#id(model.manifest.name, version.version);
      this.created.set(id, (this.created.get(id) ?? 0) + 1);
      const held = this.#creates.get(id);
      if (held) await held.promise;
      const runtime = await real(model, version);
      const wrapped: ModelRuntime = {
        kind: 'onnx-faults',
        run: async (input, rows, options) => {
          const mode = this.#modes.get(id) ?? 'pass';
          if (mode !== 'pass') this.faulted.set(id, (this.faulted.get(id) ?? 0) + 1);
          if (mode === 'gate') await this.#gates.get(id)?.promise;
          if (mode === 'fail') return runtime.run(input.subarray(0, 1), rows, options);
          return runtime.run(input, rows, options);
        },
        close: () => runtime.close(),
      };
      return wrapped;
    };
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Gateways

export interface Reply {
  status: number;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: test responses are read field by field
  body: any;
  text: string;
}

export interface ReleaseGateway {
  gateway: Gateway;
  call(
    method: string,
    url: string,
    key: string | undefined,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<Reply>;
  predict(key: string, instances: unknown[], headers?: Record<string, string>): Promise<Reply>;
  metrics(): Promise<string>;
  close(): Promise<void>;
}

export interface ReleaseGatewayOptions {
  prefix: string;
  keys: ReleaseKeys;
  modelsDir: string;
  faults?: VersionFaults;
  random?: () => number;
  routingRefreshMs?: number;
  /** enables POST /v1/admin/reload, re-reading `modelsDir` */
  reload?: boolean;
  workers?: WorkerKind[];
  dataDir?: string;
}

export async function buildGateway(options: ReleaseGatewayOptions): Promise<ReleaseGateway> {
  const models = await loadModels(options.modelsDir, SYNC_CEILING_MS);
  const config: GatewayConfig = {
    ...loadConfig({}),
    // a busy test machine is not bedside pressure: only the bedside tests lower it (deferred work must not yield here)
    pressureThresholdMs: PRESSURE_OFF_MS,
    redisPrefix: options.prefix,
    workers: options.workers ?? [],
    warmupRuns: 2,
    warmupPolicy: 'warn',
    accessLog: false,
    openOpsEndpoints: true,
    onnxThreads: 1,
    workerConcurrency: 2,
    maintenanceIntervalMs: 3_600_000,
    ...(options.dataDir ? { dataDir: options.dataDir } : {}),
  };
  const gateway = await composeGateway({
    config,
    logger: createLogger('silent'),
    redisUrl: REDIS_URL,
    keys: options.keys.store,
    models,
    runtimeFactory: (options.faults ?? new VersionFaults()).factory(),
    ...(options.random ? { random: options.random } : {}),
    ...(options.routingRefreshMs !== undefined ? { routingRefreshMs: options.routingRefreshMs } : {}),
    ...(options.reload
      ? {
          reloadModels: (): Promise<LoadedModel[]> => loadModels(options.modelsDir, SYNC_CEILING_MS),
        }
      : {}),
  });
  const call: ReleaseGateway['call'] = (method, url, key, body, headers = {}) =>
    httpCall(gateway.app, method, url, key, body, headers);
  return {
    gateway,
    call,
    predict: (key, instances, headers = {}) => call('POST', `/v1/models/${MODEL}/predict`, key, { instances }, headers),
    async metrics() {
      const res = await call('GET', '/metrics', undefined);
      if (res.status !== 200) throw new Error(`/metrics: ${res.status}`);
      return res.text;
    },
    async close() {
      options.faults?.openAll();
      await gateway.close();
    },
  };
}

/** All audit entries (GET /v1/audit, paged). */
export async function allAudit(gw: ReleaseGateway, adminKey: string): Promise<Array<Record<string, string>>> {
  const out: Array<Record<string, string>> = [];
  let url = '/v1/audit?limit=1000';
  for (;;) {
    const res = await gw.call('GET', url, adminKey);
    if (res.status !== 200) throw new Error(`audit: ${res.status} ${res.text}`);
    out.push(...res.body.entries);
    if (res.body.entries.length === 0 || !res.body.links?.next) return out;
    url = res.body.links.next;
  }
}

/** Runs `fn(i)` for i in [0, n) with at most `concurrency` at a time; results in order. */
export async function pool<T>(n: number, concurrency: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(n);
  let next = 0;
  const lane = async () => {
    while (next < n) {
      const i = next++;
      out[i] = await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, lane));
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Deterioration instances and expected scores straight from the ONNX files

export interface Vitals {
  age: number;
  respirationRate: number;
  spo2: number;
  systolicBP: number;
  pulse: number;
  temperature: number;
  onOxygen: boolean;
}

/** The feature columns in the order the manifest declares them (read from the bundled model.yaml). */
async function featureOrder(modelsDir: string): Promise<Array<keyof Vitals>> {
  const manifest = YAML.parse(await readFile(path.join(modelsDir, MODEL, 'model.yaml'), 'utf8'));
  return (manifest.features as Array<{ name: keyof Vitals }>).map((f) => f.name);
}

/** The response's rounding of a score (6 decimals), so expected values compare exactly. */
export const round6 = (v: number) => Math.round(v * 1e6) / 1e6;

/** Scores rows with a fresh onnxruntime session on `<version>/model.onnx`, independent of the gateway's code. */
export async function scoreOnnx(version: string, rows: Vitals[], modelsDir = MODELS_DIR): Promise<number[]> {
  const order = await featureOrder(modelsDir);
  const data = new Float32Array(rows.length * order.length);
  rows.forEach((row, r) => {
    order.forEach((name, c) => {
      const v = row[name];
      data[r * order.length + c] = typeof v === 'boolean' ? (v ? 1 : 0) : v;
    });
  });
  const session = await ort.InferenceSession.create(path.join(modelsDir, MODEL, version, 'model.onnx'));
  try {
    const out = await session.run({ features: new ort.Tensor('float32', data, [rows.length, order.length]) });
    const probability = out.probability as ort.Tensor;
    return Array.from(probability.data as Float32Array, round6);
  } finally {
    await session.release();
  }
}

export interface Scored {
  vitals: Vitals;
  v1: number;
  v2: number;
}

export interface Grid {
  /** both versions say escalate */
  agreePositive: Scored[];
  /** both versions say no escalation */
  agreeNegative: Scored[];
  /** v2 escalates where v1 does not */
  v2OnlyPositive: Scored[];
  /** v1 escalates where v2 does not */
  v1OnlyPositive: Scored[];
}

/**
 * Scores a grid of plausible vitals with both versions (ONNX directly) and sorts the rows by how the versions decide
 * at `threshold`, keeping only rows at least `margin` away from it (no rounding edge cases).
 */
export async function searchGrid(threshold = 0.3, margin = 1e-3): Promise<Grid> {
  const rows: Vitals[] = [];
  for (const age of [25, 45, 65, 85])
    for (const respirationRate of [10, 14, 18, 22, 26, 30])
      for (const spo2 of [88, 92, 95, 98])
        for (const systolicBP of [90, 120, 150])
          for (const pulse of [60, 85, 110, 130])
            for (const temperature of [36.4, 37.6, 38.8])
              for (const onOxygen of [false, true])
                rows.push({ age, respirationRate, spo2, systolicBP, pulse, temperature, onOxygen });
  const [v1, v2] = [await scoreOnnx('1', rows), await scoreOnnx('2', rows)];
  const grid: Grid = { agreePositive: [], agreeNegative: [], v2OnlyPositive: [], v1OnlyPositive: [] };
  rows.forEach((vitals, i) => {
    const a = v1[i] as number;
    const b = v2[i] as number;
    if (Math.abs(a - threshold) < margin || Math.abs(b - threshold) < margin) return;
    const s = { vitals, v1: a, v2: b };
    if (a >= threshold && b >= threshold) grid.agreePositive.push(s);
    else if (a < threshold && b < threshold) grid.agreeNegative.push(s);
    else if (b >= threshold) grid.v2OnlyPositive.push(s);
    else grid.v1OnlyPositive.push(s);
  });
  return grid;
}

/** A response body without its per-request id (to compare answers). */
export function withoutRequestId(body: Record<string, unknown>): Record<string, unknown> {
  const { requestId: _, ...rest } = body;
  return rest;
}
