import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Children } from './children.ts';

export type LoadTool = 'wrk' | 'autocannon';

export interface LoadSpec {
  /** label for messages */
  name: string;
  url: string;
  headers: Record<string, string>;
  body: string;
  connections: number;
  durationSec: number;
}

export interface LoadResult {
  tool: LoadTool;
  requests: number;
  durationSec: number;
  rps: number;
  meanMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  /** responses outside 2xx (wrk counts status ≥ 400, which is the same here: nothing answers 1xx/3xx) */
  non2xx: number;
  /** connect/read/write errors and timeouts */
  socketErrors: number;
  timeouts: number;
}

/** A load generator running in its own process (never in the bench's event loop). */
export interface LoadGenerator {
  tool: LoadTool;
  version: string;
  run(spec: LoadSpec): Promise<LoadResult>;
  close(): void;
}

function onPath(command: string, args: string[]): string | undefined {
  const probe = spawnSync(command, args, { encoding: 'utf8' });
  if (probe.error) return undefined;
  return `${probe.stdout}${probe.stderr}`.split('\n')[0]?.trim() || command;
}

/** wrk when it is on PATH (or BENCH_LOADGEN=wrk), else autocannon from node_modules. */
export function pickLoadGenerator(children: Children, repoRoot: string, wanted: string | undefined): LoadGenerator {
  if (wanted && wanted !== 'wrk' && wanted !== 'autocannon') throw new Error(`BENCH_LOADGEN must be wrk or autocannon`);
  const wrkVersion = wanted === 'autocannon' ? undefined : onPath('wrk', ['--version']);
  if (wanted === 'wrk' && !wrkVersion) throw new Error('BENCH_LOADGEN=wrk but wrk is not on PATH');
  if (wrkVersion) return wrk(children, wrkVersion);
  const bin = path.join(repoRoot, 'node_modules', '.bin', 'autocannon');
  const version = onPath(bin, ['--version']);
  if (!version) throw new Error(`neither wrk (on PATH) nor ${bin} is available`);
  return autocannon(children, bin, version);
}

async function collect(
  children: Children,
  name: string,
  command: string,
  args: string[],
  timeoutMs: number,
): Promise<string> {
  const child = children.spawn(name, command, args);
  let stdout = '';
  child.proc.stdout?.on('data', (chunk: Buffer) => {
    stdout += chunk.toString('utf8');
  });
  const timer = setTimeout(() => child.proc.kill('SIGKILL'), timeoutMs);
  const status = await child.exited;
  clearTimeout(timer);
  if (status !== 0) throw new Error(`${name} exited with ${status}:\n${child.tail()}`);
  return stdout;
}

// ---------------------------------------------------------------------------------------------------------------- wrk

/** Lua long-bracket literal that cannot be closed early by the content. */
function luaString(s: string): string {
  let level = 1;
  while (s.includes(`]${'='.repeat(level)}]`)) level++;
  const eq = '='.repeat(level);
  return `[${eq}[${s}]${eq}]`;
}

function wrk(children: Children, version: string): LoadGenerator {
  const dir = mkdtempSync(path.join(tmpdir(), 'triage-bench-'));
  const removeDir = () => rmSync(dir, { recursive: true, force: true });
  process.once('exit', removeDir); // also when a signal cuts the bench short
  let n = 0;
  const threads = Number(process.env.BENCH_WRK_THREADS ?? 1);
  return {
    tool: 'wrk',
    version,
    async run(spec) {
      const script = path.join(dir, `load-${n++}.lua`);
      const headerLines = Object.entries(spec.headers)
        .map(([k, v]) => `wrk.headers[ ${luaString(k)} ] = ${luaString(v)}`)
        .join('\n');
      writeFileSync(
        script,
        `wrk.method = "POST"
wrk.body = ${luaString(spec.body)}
${headerLines}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%.0f,"duration_us":%.0f,"mean_us":%.3f,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"max_us":%.0f,' ..
    '"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f}\\n',
    summary.requests, summary.duration, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
`,
      );
      const duration = Math.max(1, Math.round(spec.durationSec));
      const args = ['-t', String(threads), '-c', String(spec.connections), '-d', `${duration}s`, '--timeout', '5s'];
      const out = await collect(
        children,
        `wrk ${spec.name}`,
        'wrk',
        [...args, '-s', script, spec.url],
        (duration + 30) * 1000,
      );
      const line = out.split('\n').find((l) => l.startsWith('BENCH_JSON '));
      if (!line) throw new Error(`wrk ${spec.name}: no result line in its output:\n${out}`);
      const r = JSON.parse(line.slice('BENCH_JSON '.length)) as Record<string, number>;
      const num = (k: string) => r[k] ?? 0;
      const durationSec = num('duration_us') / 1e6;
      return {
        tool: 'wrk',
        requests: num('requests'),
        durationSec,
        rps: durationSec > 0 ? num('requests') / durationSec : 0,
        meanMs: num('mean_us') / 1000,
        p50Ms: num('p50_us') / 1000,
        p90Ms: num('p90_us') / 1000,
        p99Ms: num('p99_us') / 1000,
        maxMs: num('max_us') / 1000,
        non2xx: num('status'),
        socketErrors: num('connect') + num('read') + num('write') + num('timeout'),
        timeouts: num('timeout'),
      };
    },
    close: removeDir,
  };
}

// --------------------------------------------------------------------------------------------------------- autocannon

interface AutocannonJson {
  duration: number;
  requests: { total: number; average: number };
  latency: { mean: number; p50: number; p90: number; p99: number; max: number };
  non2xx: number;
  errors: number;
  timeouts: number;
}

function autocannon(children: Children, bin: string, version: string): LoadGenerator {
  return {
    tool: 'autocannon',
    version,
    async run(spec) {
      const duration = Math.max(1, Math.round(spec.durationSec));
      const headers = Object.entries(spec.headers).flatMap(([k, v]) => ['-H', `${k}=${v}`]);
      const args = ['-j', '-n', '-c', String(spec.connections), '-d', String(duration), '-t', '5', '-m', 'POST'];
      const out = await collect(
        children,
        `autocannon ${spec.name}`,
        bin,
        [...args, ...headers, '-b', spec.body, spec.url],
        (duration + 30) * 1000,
      );
      const start = out.indexOf('{');
      if (start < 0) throw new Error(`autocannon ${spec.name}: no JSON in its output:\n${out}`);
      const r = JSON.parse(out.slice(start)) as AutocannonJson;
      return {
        tool: 'autocannon',
        requests: r.requests.total,
        durationSec: r.duration,
        rps: r.duration > 0 ? r.requests.total / r.duration : r.requests.average,
        meanMs: r.latency.mean,
        p50Ms: r.latency.p50,
        p90Ms: r.latency.p90,
        p99Ms: r.latency.p99,
        maxMs: r.latency.max,
        non2xx: r.non2xx,
        // autocannon counts timeouts among errors
        socketErrors: r.errors,
        timeouts: r.timeouts,
      };
    },
    close() {},
  };
}
