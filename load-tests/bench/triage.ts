import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { hashKey } from '../../src/platform/auth.ts';
import { type Child, freePort, waitForOk } from './children.ts';
import { deletePrefix } from './common.ts';
import type { BenchContext } from './context.ts';

export interface TriageProcess {
  url: string;
  /** a client key valid for every model */
  clientKey: string;
  /** an admin key, when the options asked for one */
  adminKey?: string;
  /** its TRIAGE_REDIS_PREFIX (own keyspace, deleted by `stop`) */
  prefix: string;
  child: Child;
  /** Prometheus text of /metrics, parsed */
  scrape(): Promise<PromSample[]>;
  stop(): Promise<number | string>;
}

export interface TriageOptions {
  name: string;
  logLevel: 'warn' | 'info';
  accessLog: boolean;
  /** extra TRIAGE_* variables */
  env?: Record<string, string>;
  /** write a V8 CPU profile of the child into this folder (written when it exits) */
  cpuProfDir?: string;
  /** also configure a key with role admin (routing changes) */
  adminKey?: boolean;
}

/** Starts `node dist/src/server.js` (built by the harness) in production mode on a free port and waits for /readyz. */
export async function startTriage(ctx: BenchContext, options: TriageOptions): Promise<TriageProcess> {
  const port = await freePort();
  const clientKey = `trg_bench_${randomBytes(24).toString('hex')}`;
  const adminKey = options.adminKey ? `trg_bench_admin_${randomBytes(24).toString('hex')}` : undefined;
  const keysYaml = [
    'keys:',
    `  - id: bench-client`,
    `    role: client`,
    `    sha256: ${hashKey(clientKey)}`,
    `    models: ['*']`,
    ...(adminKey
      ? [`  - id: bench-admin`, `    role: admin`, `    sha256: ${hashKey(adminKey)}`, `    models: ['*']`]
      : []),
  ].join('\n');
  const prefix = `{triage-bench-${process.pid}-${port}}`;
  // the caller's TRIAGE_* settings stay out: the bench defines its own config
  const env: NodeJS.ProcessEnv = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('TRIAGE_')),
  );
  Object.assign(env, {
    TRIAGE_ENV: 'production',
    TRIAGE_HOST: '127.0.0.1',
    TRIAGE_PORT: String(port),
    TRIAGE_API_KEYS: keysYaml,
    TRIAGE_MODELS_DIR: ctx.modelsDir,
    TRIAGE_LOG_LEVEL: options.logLevel,
    TRIAGE_ACCESS_LOG: String(options.accessLog),
    // own keyspace: on a shared Redis the bench neither picks up nor leaves behind anybody's jobs
    TRIAGE_REDIS_PREFIX: prefix,
    ...(ctx.redisUrl ? { TRIAGE_REDIS_URL: ctx.redisUrl } : {}),
    // limits that never refuse: the bench measures throughput, and the limiter stays on the measured path
    TRIAGE_RATE_LIMIT_PREDICT: '1000000/1s',
    TRIAGE_RATE_LIMIT_SUBMIT: '1000000/1s',
    TRIAGE_RATE_LIMIT_DEFAULT: '1000000/1s',
    // a warm-up slowed by the busy shared machine is not a model too slow for its budget: refused, the model would
    // answer every request of the run with a 503 and the section would measure nothing (the warm-up is not measured)
    TRIAGE_WARMUP_POLICY: 'warn',
    // the one TRIAGE_ setting taken from the bench's caller (load-tests/bench.ts): sockets on the port
    ...(process.env.BENCH_LISTEN_SOCKETS ? { TRIAGE_LISTEN_SOCKETS: process.env.BENCH_LISTEN_SOCKETS } : {}),
    ...options.env,
  });
  const nodeArgs = options.cpuProfDir ? ['--cpu-prof', '--cpu-prof-dir', options.cpuProfDir] : [];
  const child = ctx.children.spawn(
    options.name,
    process.execPath,
    [...nodeArgs, path.join(ctx.repoRoot, 'dist', 'src', 'server.js')],
    { cwd: ctx.repoRoot, env },
  );
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    const status = await ctx.children.stop(child, 15_000);
    // leave nothing behind on a shared Redis: job records, queues, shadow pairs, routing overrides
    await deletePrefix(ctx.redisUrl, prefix).catch(() => 0);
    return status;
  };
  try {
    await waitForOk(`${url}/readyz`, child, 60_000);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    url,
    clientKey,
    ...(adminKey ? { adminKey } : {}),
    prefix,
    child,
    async scrape() {
      // right after an overload phase the gateway may still be working through its sockets: a few tries, and the
      // cause of the last failure said (undici's "fetch failed" alone names none)
      for (let attempt = 1; ; attempt++) {
        try {
          const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5000) });
          if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
          return parseProm(await res.text());
        } catch (err) {
          if (attempt >= 3) {
            const cause = (err as { cause?: { message?: string } }).cause?.message;
            throw new Error(`${options.name}: ${(err as Error).message}${cause ? ` (${cause})` : ''}`);
          }
          await new Promise((r) => setTimeout(r, 1000));
        }
      }
    },
    stop,
  };
}

export interface PromSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Minimal Prometheus text-format parser: enough for prom-client's output (no escapes inside label values needed). */
export function parseProm(text: string): PromSample[] {
  const out: PromSample[] = [];
  const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const raw of text.split('\n')) {
    if (raw === '' || raw.startsWith('#')) continue;
    const m = line.exec(raw);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(label)) labels[l[1] as string] = l[2] as string;
    out.push({ name: m[1] as string, labels, value: Number(m[3]) });
  }
  return out;
}

/** Sum of a metric's samples whose labels include `match`. */
export function promSum(samples: PromSample[], name: string, match: Record<string, string> = {}): number {
  let total = 0;
  for (const s of samples) {
    if (s.name !== name) continue;
    if (Object.entries(match).every(([k, v]) => s.labels[k] === v)) total += s.value;
  }
  return total;
}
