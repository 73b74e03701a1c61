/**
 * Shared helpers of the async-tier tests: a gateway built through the real composition root (real Redis, BullMQ,
 * onnxruntime), a per-file Redis prefix that is deleted afterwards, a real HTTP callback receiver that verifies every
 * request with `standardwebhooks`, a controllable clock, temp copies of model folders with edited manifests, and
 * bounded polling.
 */
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Queue } from 'bullmq';
import type { Logger } from 'pino';
import { Webhook } from 'standardwebhooks';
import YAML from 'yaml';
import type { CloudEvent } from '../src/callbacks/event.ts';
import { composeGateway, type Gateway, type GatewayConfig } from '../src/compose.ts';
import type { AuditEntry } from '../src/platform/audit.ts';
import { ApiKeyStore, hashKey } from '../src/platform/auth.ts';
import { loadConfig } from '../src/platform/config.ts';
import { createLogger } from '../src/platform/logger.ts';
import { loadModels } from '../src/registry/load.ts';
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
  tempModels,
  waitFor,
} from './support.ts';

export { deletePrefix, MODELS_DIR, makePrefix, metricValue, REDIS_URL, removeDir, sleep, tempModels, waitFor };

// ---------------------------------------------------------------------------------------------------------------
// Keys

export interface AsyncKeys {
  /** client A: callbacks to loopback, signed with secrets.a */
  clientA: string;
  /** client B: another client, its own secret */
  clientB: string;
  /** a client whose callback allowlist is `*.example.org` */
  wildcard: string;
  reviewer: string;
  reviewer2: string;
  admin: string;
  secrets: { a: string; b: string; wildcard: string };
  store: ApiKeyStore;
  /** the same keys as a TRIAGE_API_KEYS document (for worker processes) */
  yaml: string;
}

export function makeKeys(): AsyncKeys {
  const key = (role: string) => `trg_${role}_${randomBytes(16).toString('hex')}`;
  const secret = () => `whsec_${randomBytes(24).toString('base64')}`;
  const k = {
    clientA: key('a'),
    clientB: key('b'),
    wildcard: key('w'),
    reviewer: key('r'),
    reviewer2: key('r2'),
    admin: key('adm'),
    secrets: { a: secret(), b: secret(), wildcard: secret() },
  };
  const entries = [
    {
      id: 'client-a',
      role: 'client' as const,
      sha256: hashKey(k.clientA),
      models: ['*'],
      callbackHosts: ['127.0.0.1', 'localhost'],
      callbackSecret: k.secrets.a,
    },
    {
      id: 'client-b',
      role: 'client' as const,
      sha256: hashKey(k.clientB),
      models: ['*'],
      callbackHosts: ['127.0.0.1'],
      callbackSecret: k.secrets.b,
    },
    {
      id: 'client-wild',
      role: 'client' as const,
      sha256: hashKey(k.wildcard),
      models: ['*'],
      callbackHosts: ['*.example.org'],
      callbackSecret: k.secrets.wildcard,
    },
    { id: 'reviewer-1', role: 'reviewer' as const, sha256: hashKey(k.reviewer), models: ['*'] },
    { id: 'reviewer-2', role: 'reviewer' as const, sha256: hashKey(k.reviewer2), models: ['*'] },
    { id: 'admin-1', role: 'admin' as const, sha256: hashKey(k.admin), models: ['*'] },
  ];
  return { ...k, store: new ApiKeyStore(entries), yaml: YAML.stringify({ keys: entries }) };
}

// ---------------------------------------------------------------------------------------------------------------
// Clock

/** Strictly increasing milliseconds near wall time (so holds order deterministically), plus a settable offset. */
export class TestClock {
  #last = 0;
  offsetMs = 0;
  readonly now = (): number => {
    const t = Math.max(Date.now() + this.offsetMs, this.#last + 1);
    this.#last = t;
    return t;
  };
  advance(ms: number): void {
    this.offsetMs += ms;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Gateway

export interface AsyncGatewayOptions {
  prefix: string;
  keys: AsyncKeys;
  workers?: WorkerKind[];
  modelsDir?: string;
  /** only these models (by name) */
  only?: string[];
  logger?: Logger;
  now?: () => number;
  random?: () => number;
  attempts?: number;
  backoffMs?: number;
  lockMs?: number;
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
  call(
    method: string,
    url: string,
    key: string | undefined,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<Reply>;
  close(): Promise<void>;
}

export async function buildGateway(options: AsyncGatewayOptions): Promise<TestGateway> {
  let models = await loadModels(options.modelsDir ?? MODELS_DIR, 5000);
  if (options.only) models = models.filter((m) => options.only?.includes(m.manifest.name));
  const config: GatewayConfig = {
    ...loadConfig({}),
    // a busy test machine is not bedside pressure: only the bedside tests lower it (deferred work must not yield here)
    pressureThresholdMs: PRESSURE_OFF_MS,
    redisPrefix: options.prefix,
    workers: options.workers ?? ['inference', 'callbacks', 'maintenance'],
    warmupRuns: 3,
    warmupPolicy: 'warn',
    accessLog: true,
    openOpsEndpoints: true,
    workerConcurrency: 4,
    callbacks: {
      attempts: options.attempts ?? 4,
      backoffMs: options.backoffMs ?? 50,
      timeoutMs: 2000,
      httpHosts: ['127.0.0.1', 'localhost'],
    },
    maintenanceIntervalMs: 3_600_000,
    ...(options.lockMs !== undefined ? { workerLockMs: options.lockMs } : {}),
  };
  const gateway = await composeGateway({
    config,
    logger: options.logger ?? createLogger('silent'),
    redisUrl: REDIS_URL,
    keys: options.keys.store,
    models,
    ...(options.now ? { now: options.now } : {}),
    ...(options.random ? { random: options.random } : {}),
  });
  return {
    gateway,
    call: (method, url, key, body, headers = {}) => httpCall(gateway.app, method, url, key, body, headers),
    close: () => gateway.close(),
  };
}

/** Polls GET /v1/jobs/:id until the job is in one of `states`; returns the job view. */
export async function waitForState(
  gw: TestGateway,
  key: string,
  id: string,
  states: string | string[],
  timeoutMs = 10_000,
): Promise<Reply['body']> {
  const wanted = Array.isArray(states) ? states : [states];
  let last: Reply | undefined;
  await waitFor(
    async () => {
      last = await gw.call('GET', `/v1/jobs/${id}`, key);
      return wanted.includes(last.body?.state);
    },
    () => `job ${id} to be ${wanted.join('|')} (last: ${last?.status} ${last?.body?.state ?? last?.text})`,
    timeoutMs,
  );
  return last?.body;
}

/** True when a queue has nothing waiting, delayed or running. */
export async function queueIdle(queue: Queue): Promise<boolean> {
  const c = await queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized', 'waiting-children');
  return Object.values(c).every((n) => n === 0);
}

/** All audit entries (GET /v1/audit, paged). */
export async function allAudit(gw: TestGateway, adminKey: string): Promise<Array<{ id: string } & AuditEntry>> {
  const out: Array<{ id: string } & AuditEntry> = [];
  let url = '/v1/audit?limit=1000';
  for (;;) {
    const res = await gw.call('GET', url, adminKey);
    if (res.status !== 200) throw new Error(`audit: ${res.status} ${res.text}`);
    out.push(...res.body.entries);
    if (res.body.entries.length === 0 || !res.body.links?.next) return out;
    url = res.body.links.next;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Callback receiver

export interface Delivery {
  id: string;
  status: number;
  verified: boolean;
  body: string;
  headers: Record<string, string>;
  path: string;
}

/**
 * A real HTTP receiver on 127.0.0.1: answers 503 while `down` (or for the next `failNext` requests), otherwise
 * verifies the Standard Webhooks signature and records the event once per webhook-id (receivers de-duplicate).
 * `deliveries` keeps every raw request, retries included.
 */
export class Receiver {
  readonly deliveries: Delivery[] = [];
  readonly events = new Map<string, CloudEvent<Record<string, unknown>>>();
  down = false;
  failNext = 0;
  #server: http.Server;
  #secret: string;
  port = 0;

  private constructor(secret: string) {
    this.#secret = secret;
    this.#server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        const headers = Object.fromEntries(
          Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(',') : (v ?? '')]),
        );
        const id = headers['webhook-id'] ?? '';
        const record = (status: number, verified: boolean) => {
          this.deliveries.push({ id, status, verified, body, headers, path: req.url ?? '' });
          res.writeHead(status).end();
        };
        if (this.down) return record(503, false);
        if (this.failNext > 0) {
          this.failNext--;
          return record(503, false);
        }
        let event: CloudEvent<Record<string, unknown>>;
        try {
          event = new Webhook(this.#secret).verify(body, headers) as CloudEvent<Record<string, unknown>>;
        } catch {
          return record(401, false);
        }
        if (!this.events.has(id)) this.events.set(id, event);
        record(204, true);
      });
    });
  }

  static async start(secret: string): Promise<Receiver> {
    const r = new Receiver(secret);
    await new Promise<void>((resolve) => r.#server.listen(0, '127.0.0.1', resolve));
    r.port = (r.#server.address() as AddressInfo).port;
    return r;
  }

  url(pathname = '/hooks'): string {
    return `http://127.0.0.1:${this.port}${pathname}`;
  }

  /** raw requests about one job (event ids are `evt-<job id>-<event>`) */
  deliveriesFor(jobId: string): Delivery[] {
    return this.deliveries.filter((d) => d.id.startsWith(`evt-${jobId}-`));
  }

  eventsFor(jobId: string): Array<CloudEvent<Record<string, unknown>>> {
    return [...this.events.entries()].filter(([id]) => id.startsWith(`evt-${jobId}-`)).map(([, e]) => e);
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Temp model folders

/** A logger that keeps every line (to assert that no patient data is logged). */
export function captureLogger(level = 'info'): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  return { logger: createLogger(level, { write: (line: string) => void lines.push(line) }), lines };
}

/** Clinical notes the demonstration model classifies confidently. */
export const NOTES = {
  urgent: 'Patient reports central chest pain radiating to the left arm, troponin raised. Urgent cardiology review.',
  routine: 'Hypertension well controlled and stable on amlodipine. Repeat bloods in 3 months and review in clinic.',
  none: 'Chest X-ray normal. Bloods unremarkable. No concerns, discharged.',
};

/** A valid NEWS2 instance (scores 0). */
export const NEWS2_INSTANCE = {
  respirationRate: 16,
  spo2: 97,
  onOxygen: false,
  systolicBP: 120,
  pulse: 70,
  consciousness: 'alert',
  temperature: 37,
};
