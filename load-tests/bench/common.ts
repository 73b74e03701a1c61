/** Small helpers shared by the bench sections: HTTP with keep-alive, percentiles, /proc memory, Redis cleanup. */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { Redis } from 'ioredis';
import { KeySpace } from '../../src/platform/keyspace.ts';
import type { Children } from './children.ts';
import type { BenchContext } from './context.ts';
import { busiestProfile } from './cpuprofile.ts';

export const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export const fmt = (n: number | undefined, digits = 2) =>
  n === undefined || !Number.isFinite(n) ? '-' : n.toFixed(digits);

export const passFail = (ok: boolean) => (ok ? 'PASS' : 'FAIL');

/** Nearest-rank percentile of an ascending array (`p` in 0..1). */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(sorted.length * p) - 1))] as number;
}

export function summarize(samples: readonly number[]): {
  n: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
} {
  const s = [...samples].sort((a, b) => a - b);
  return {
    n: s.length,
    p50: percentile(s, 0.5),
    p90: percentile(s, 0.9),
    p99: percentile(s, 0.99),
    max: s.at(-1) ?? 0,
  };
}

/** A number from the environment (`fallback` when unset); refuses junk with a message naming the variable. */
export function envNumber(name: string, fallback: number, min = 0): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min) throw new Error(`${name} must be a number ≥ ${min}, got "${raw}"`);
  return n;
}

export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/**
 * A minimal HTTP/1.1 client on a keep-alive agent: cheaper per request than fetch, so the bench process (which
 * shares the cores with the server) spends less of them on being the client.
 */
export class HttpClient {
  readonly #agent: http.Agent;
  readonly #base: URL;
  readonly #headers: Record<string, string>;

  constructor(baseUrl: string, headers: Record<string, string> = {}, maxSockets = 64) {
    this.#base = new URL(baseUrl);
    this.#headers = headers;
    this.#agent = new http.Agent({ keepAlive: true, maxSockets });
  }

  request(
    method: string,
    path: string,
    body?: string,
    headers: Record<string, string> = {},
    timeoutMs = 10_000,
  ): Promise<HttpAnswer> {
    return new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: this.#base.hostname,
          port: this.#base.port,
          method,
          path,
          agent: this.#agent,
          headers: {
            ...this.#headers,
            ...(body !== undefined
              ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }
              : {}),
            ...headers,
          },
          timeout: timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              text: Buffer.concat(chunks).toString('utf8'),
            }),
          );
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error(`${method} ${path}: no answer within ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end(body);
    });
  }

  async json<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: T }> {
    const r = await this.request(method, path, body === undefined ? undefined : JSON.stringify(body), headers);
    let parsed: unknown;
    try {
      parsed = r.text === '' ? undefined : JSON.parse(r.text);
    } catch {
      parsed = r.text;
    }
    return { status: r.status, headers: r.headers, body: parsed as T };
  }

  close(): void {
    this.#agent.destroy();
  }
}

/** VmRSS and VmHWM (peak) of a process, in MiB, from /proc (Linux); undefined when unreadable. */
export function procMemory(pid: number): { rssMiB: number; hwmMiB: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
    return { rssMiB: kb('VmRSS') / 1024, hwmMiB: kb('VmHWM') / 1024 };
  } catch {
    return undefined;
  }
}

/** The machine's CPU time so far, in clock ticks, from /proc/stat's `cpu` line (undefined off Linux). */
export function cpuTicks(): { total: number; steal: number; idle: number } | undefined {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] as string;
    // user nice system idle iowait irq softirq steal …
    const v = line.trim().split(/\s+/).slice(1).map(Number);
    return { total: v.slice(0, 8).reduce((a, x) => a + x, 0), steal: v[7] ?? 0, idle: (v[3] ?? 0) + (v[4] ?? 0) };
  } catch {
    return undefined;
  }
}

/**
 * How much of the machine's CPU time its host took (steal) and how much went unused while a section ran: on a shared
 * virtual machine the host's other guests move every ratio, and a section with high steal is one to run again.
 */
export function hostShare(
  before: ReturnType<typeof cpuTicks>,
  after: ReturnType<typeof cpuTicks>,
): { stealPercent: number; idlePercent: number } | undefined {
  if (!before || !after || after.total <= before.total) return undefined;
  const total = after.total - before.total;
  return {
    stealPercent: (100 * (after.steal - before.steal)) / total,
    idlePercent: (100 * (after.idle - before.idle)) / total,
  };
}

/**
 * CPU time (user + system, ms) of a process, or of one of its threads when `tid` is given (the main thread's id is the
 * process id), from /proc (Linux); undefined when unreadable.
 */
export function procCpuMs(pid: number | undefined, tid?: number): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8');
    // fields after the command name (which may hold spaces): utime and stime, in clock ticks (USER_HZ: 100 on Linux)
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
  } catch {
    return undefined;
  }
}

/**
 * Samples a process's VmRSS every `everyMs` until stopped; `stop` returns the peak, the sample count and the peak of
 * each quarter of the sampled time (a plateau or a climb: the shape of the memory over the run).
 */
export function sampleRss(
  pid: number,
  everyMs = 100,
): { stop(): { peakMiB: number; samples: number; quarterPeaksMiB: number[] } } {
  const values: number[] = [];
  const take = () => {
    const m = procMemory(pid);
    if (m && Number.isFinite(m.rssMiB)) values.push(m.rssMiB);
  };
  take();
  const timer = setInterval(take, everyMs);
  return {
    stop() {
      clearInterval(timer);
      take();
      const quarter = (q: number) =>
        Math.max(...values.slice(Math.floor((q * values.length) / 4), Math.ceil(((q + 1) * values.length) / 4)));
      return {
        peakMiB: Math.max(0, ...values),
        samples: values.length,
        quarterPeaksMiB: [0, 1, 2, 3].map(quarter),
      };
    },
  };
}

/** Deletes every key under `prefix` (the bench's own keyspaces on a possibly shared Redis). */
export async function deletePrefix(redisUrl: string | undefined, prefix: string): Promise<number> {
  const redis = new Redis(redisUrl ?? DEFAULT_REDIS_URL, { maxRetriesPerRequest: 1, lazyConnect: true });
  let deleted = 0;
  try {
    await redis.connect();
    for (const pattern of new KeySpace(prefix).patterns()) {
      let cursor = '0';
      do {
        const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
        cursor = next;
        if (keys.length > 0) deleted += await redis.unlink(...keys);
      } while (cursor !== '0');
    }
    return deleted;
  } finally {
    redis.disconnect();
  }
}

/**
 * Runs a helper script (`node --import tsx <script>`) as a bench child and returns the JSON it prints on the line
 * starting with `marker` (its stderr tail is in the error when it fails).
 */
export async function runJsonChild<T>(
  children: Children,
  name: string,
  script: string,
  env: Record<string, string>,
  options: { cwd: string; marker: string; timeoutMs: number },
): Promise<T> {
  const child = children.spawn(name, process.execPath, ['--import', 'tsx', script], {
    cwd: options.cwd,
    env: { ...process.env, ...env },
  });
  let stdout = '';
  child.proc.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
  });
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), options.timeoutMs);
  const status = await child.exited;
  clearTimeout(timer);
  const line = stdout.split('\n').find((l) => l.startsWith(`${options.marker} `));
  if (status !== 0 || !line)
    throw new Error(`${name} exited with ${status}, no ${options.marker} line:\n${child.tail(3000)}`);
  return JSON.parse(line.slice(options.marker.length + 1)) as T;
}

/** BENCH_CPU_PROF=1: prints the busiest thread's top self-time functions of a child profiled into `dir`. */
export function logProfile(ctx: BenchContext, dir: string, label: string, rows = 15): unknown {
  const found = busiestProfile(dir, ctx.repoRoot);
  if (!found) {
    ctx.log(`  (no .cpuprofile written in ${dir})`);
    return undefined;
  }
  const { totalMs, idleMs } = found.summary;
  ctx.log(
    `${label} CPU profile (${fmt(totalMs / 1000, 1)} s sampled, ${fmt((100 * idleMs) / (totalMs || 1), 1)}% idle; ` +
      'the profiler slows it down): top self time, % of busy time',
  );
  for (const r of found.summary.rows.slice(0, rows)) {
    ctx.log(`  ${fmt(r.percent, 1).padStart(5)}%  ${fmt(r.selfMs, 0).padStart(6)} ms  ${r.function}  ${r.location}`);
  }
  return { file: path.relative(ctx.repoRoot, found.file), totalMs, idleMs, top: found.summary.rows };
}
