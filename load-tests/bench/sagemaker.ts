import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import YAML from 'yaml';
import { TEST_CREDENTIALS } from '../../test/fakes/sagemaker-fake.ts';
import type { Child } from './children.ts';
import { envNumber, fmt, procCpuMs, runJsonChild } from './common.ts';
import type { BenchContext, Section, SectionResult } from './context.ts';
import type { LoadResult } from './load.ts';
import { DETERIORATION_INSTANCE } from './sync.ts';
import { promSum, startTriage } from './triage.ts';

const MODEL = 'deterioration';
const VERSION = '3';
const ENDPOINT_NAME = 'deterioration-bench';
const REGION = 'eu-west-2';

/** DETERIORATION_INSTANCE as the gateway sends it: the manifest's feature order, booleans as 0/1. */
const DETERIORATION_ROW = [
  DETERIORATION_INSTANCE.age,
  DETERIORATION_INSTANCE.respirationRate,
  DETERIORATION_INSTANCE.spo2,
  DETERIORATION_INSTANCE.systolicBP,
  DETERIORATION_INSTANCE.pulse,
  DETERIORATION_INSTANCE.temperature,
  DETERIORATION_INSTANCE.onOxygen ? 1 : 0,
];

interface DirectResult {
  concurrency: number;
  warmupSec: number;
  durationSec: number;
  requests: number;
  rps: number;
  meanMs: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  errors: number;
  warmupErrors: number;
  cpuCores: number;
  firstError?: string;
}

interface FakeStats {
  calls: number;
  rows: number;
  faults: number;
  cpuMs: number;
}

const statsDelta = (a: FakeStats, b: FakeStats): FakeStats => ({
  calls: b.calls - a.calls,
  rows: b.rows - a.rows,
  faults: b.faults - a.faults,
  cpuMs: b.cpuMs - a.cpuMs,
});

interface FakeProcess {
  url: string;
  child: Child;
  /** the fake's running totals (SIGUSR2 → one stats line) */
  stats(): Promise<FakeStats>;
}

const STATS_MARKER = 'SAGEMAKER_FAKE_STATS ';

/** Starts sagemaker-fake-server.ts as a bench child and waits for the JSON line with its URL. */
async function startFake(ctx: BenchContext): Promise<FakeProcess> {
  const child = ctx.children.spawn(
    'sagemaker fake',
    process.execPath,
    ['--import', 'tsx', path.join(ctx.repoRoot, 'load-tests', 'bench', 'sagemaker-fake-server.ts')],
    { cwd: ctx.repoRoot, env: { ...process.env, SAGEMAKER_FAKE_REGION: REGION } },
  );
  let buffer = '';
  const lines: string[] = [];
  const waiters: Array<() => void> = [];
  child.proc.stdout?.on('data', (chunk: Buffer) => {
    buffer += chunk.toString('utf8');
    let nl = buffer.indexOf('\n');
    while (nl >= 0) {
      lines.push(buffer.slice(0, nl));
      buffer = buffer.slice(nl + 1);
      nl = buffer.indexOf('\n');
    }
    for (const w of waiters.splice(0)) w();
  });
  const nextLine = async (accept: (l: string) => boolean, timeoutMs: number, what: string): Promise<string> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = lines.findIndex(accept);
      if (i >= 0) return lines.splice(0, i + 1).at(-1) as string;
      if (child.exitStatus !== undefined)
        throw new Error(`sagemaker fake exited (${child.exitStatus}) before ${what}:\n${child.tail(3000)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`sagemaker fake: no ${what} within ${timeoutMs} ms:\n${child.tail(3000)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 100));
        waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  };
  const first = await nextLine((l) => l.startsWith('{'), 30_000, 'URL line');
  const { url } = JSON.parse(first) as { url: string };
  return {
    url,
    child,
    async stats() {
      child.proc.kill('SIGUSR2');
      const line = await nextLine((l) => l.startsWith(STATS_MARKER), 5000, 'stats line');
      return JSON.parse(line.slice(STATS_MARKER.length)) as FakeStats;
    },
  };
}

/** A models dir holding a copy of models/deterioration whose version 3 is the fake's endpoint, routed 100%. */
function writeModelsDir(ctx: BenchContext, fakeUrl: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'triage-bench-sagemaker-'));
  const modelDir = path.join(dir, MODEL);
  cpSync(path.join(ctx.modelsDir, MODEL), modelDir, { recursive: true });
  const file = path.join(modelDir, 'model.yaml');
  const doc = YAML.parseDocument(readFileSync(file, 'utf8'));
  const manifest = doc.toJS() as {
    versions: Array<{ version: string; evidence?: Record<string, unknown> }>;
    sync?: Record<string, unknown>;
  };
  const v1 = manifest.versions.find((v) => v.version === '1');
  if (!v1?.evidence) throw new Error(`models/${MODEL}/model.yaml: version 1 has no evidence to copy`);
  doc.addIn(['versions'], {
    version: VERSION,
    description: 'bench: the SageMaker fake (sagemaker-fake-server.ts)',
    runtime: { kind: 'sagemaker', endpointName: ENDPOINT_NAME, region: REGION, endpointUrl: fakeUrl },
    resilience: { timeoutMs: 1000, retries: 0 },
    evidence: { ...v1.evidence, rollbackTarget: '1' },
  });
  doc.setIn(['routing'], { primary: VERSION });
  // the fake's latency under 32 concurrent calls must not turn into 504s: the budget is not what is measured here
  doc.setIn(['sync', 'latencyBudgetMs'], 1000);
  writeFileSync(file, doc.toString());
  return dir;
}

/**
 * Issue 5: the gateway's overhead over calling the SageMaker fake directly with the SDK. The fake runs in its own
 * process; the baseline is the real SDK client in another (one row per InvokeEndpoint, `connections` calls in
 * flight); then Triage with deterioration v3 on the fake, driven by the sync section's load generator. Informational:
 * the issue sets no target.
 */
export const sagemakerSection: Section = {
  name: 'sagemaker',
  description: `sync predict (${MODEL} v${VERSION} on the SageMaker fake) vs the SDK calling the fake directly`,
  async run(ctx: BenchContext): Promise<SectionResult> {
    const errors: string[] = [];
    const notes: string[] = [];
    const connections = ctx.settings.connections;
    const durationSec = envNumber('BENCH_SAGEMAKER_DURATION', Math.min(8, ctx.settings.durationSec), 1);
    const warmupSec = envNumber('BENCH_SAGEMAKER_WARMUP', ctx.settings.warmupSec, 0);
    const settings = { durationSec, warmupSec, connections, model: MODEL, version: VERSION, row: DETERIORATION_ROW };

    const fake = await startFake(ctx);
    ctx.log(`SageMaker fake (own process, SigV4 checked per request) at ${fake.url}`);
    let modelsDir: string | undefined;
    try {
      // 1. baseline: the SDK straight at the fake
      ctx.log(
        `direct: @aws-sdk/client-sagemaker-runtime InvokeEndpoint, 1 row per call, ${connections} in flight, ` +
          `${warmupSec} s warm-up + ${durationSec} s measured (own process)`,
      );
      const fakeBeforeDirect = await fake.stats();
      const direct = await runJsonChild<DirectResult>(
        ctx.children,
        'sagemaker direct',
        path.join(ctx.repoRoot, 'load-tests', 'bench', 'sagemaker-direct.ts'),
        {
          SM_ENDPOINT_URL: fake.url,
          SM_REGION: REGION,
          SM_ENDPOINT_NAME: ENDPOINT_NAME,
          SM_ROW: JSON.stringify(DETERIORATION_ROW),
          SM_CONCURRENCY: String(connections),
          SM_WARMUP_SEC: String(warmupSec),
          SM_DURATION_SEC: String(durationSec),
        },
        { cwd: ctx.repoRoot, marker: 'SAGEMAKER_DIRECT', timeoutMs: (warmupSec + durationSec + 60) * 1000 },
      );
      const fakeAfterDirect = await fake.stats();
      ctx.log(
        `  direct SDK → fake              ${fmt(direct.rps, 0)} rps, p50 ${fmt(direct.p50Ms)} ms, p99 ${fmt(direct.p99Ms)} ms` +
          (direct.errors ? `  [${direct.errors} errors: ${direct.firstError}]` : ''),
      );
      if (direct.errors > 0) errors.push(`direct: ${direct.errors} failed calls (${direct.firstError})`);
      if (direct.requests === 0) errors.push('direct: no calls completed');
      if (direct.warmupErrors > 0) notes.push(`direct warm-up: ${direct.warmupErrors} failed calls (not counted)`);

      // 2. Triage with deterioration v3 on the fake
      modelsDir = writeModelsDir(ctx, fake.url);
      const triage = await startTriage(ctx, {
        name: 'triage (sagemaker)',
        logLevel: 'warn',
        accessLog: false,
        env: {
          TRIAGE_MODELS_DIR: modelsDir,
          AWS_ACCESS_KEY_ID: TEST_CREDENTIALS.accessKeyId,
          AWS_SECRET_ACCESS_KEY: TEST_CREDENTIALS.secretAccessKey,
          AWS_SESSION_TOKEN: '',
          AWS_REGION: REGION,
        },
      });
      let measured: LoadResult | undefined;
      let warmup: LoadResult | undefined;
      let gateway: Record<string, number> | undefined;
      let fakeDuringTriage: FakeStats | undefined;
      let probe: unknown;
      try {
        const url = `${triage.url}/v1/models/${MODEL}/predict`;
        const body = JSON.stringify({ instances: [DETERIORATION_INSTANCE] });
        const headers = { 'content-type': 'application/json', authorization: `Bearer ${triage.clientKey}` };
        const res = await fetch(url, { method: 'POST', body, headers, signal: AbortSignal.timeout(5000) });
        const text = await res.text();
        if (res.status !== 200) throw new Error(`${MODEL} probe answered ${res.status}: ${text}`);
        probe = JSON.parse(text);
        if ((probe as { version?: string }).version !== VERSION) {
          throw new Error(`${MODEL} probe was not answered by v${VERSION}: ${text}`);
        }
        ctx.log(`  Triage ready at ${triage.url}; probe: ${text}`);
        ctx.log(
          `triage: POST /v1/models/${MODEL}/predict (v${VERSION} → fake), ${ctx.load.tool}, ${connections} connections, ` +
            `${warmupSec} s warm-up + ${durationSec} s measured`,
        );
        const spec = { url, headers, body, connections };
        if (warmupSec > 0) warmup = await ctx.load.run({ ...spec, name: 'sagemaker warm-up', durationSec: warmupSec });
        const before = await triage.scrape();
        const fakeBefore = await fake.stats();
        const triageCpuBefore = procCpuMs(triage.child.proc.pid);
        measured = await ctx.load.run({ ...spec, name: 'sagemaker triage', durationSec });
        const triageCpuAfter = procCpuMs(triage.child.proc.pid);
        const fakeAfter = await fake.stats();
        const after = await triage.scrape();
        const d = (name: string, labels: Record<string, string> = {}) =>
          promSum(after, name, { model: MODEL, ...labels }) - promSum(before, name, { model: MODEL, ...labels });
        gateway = {
          remoteEvents: d('triage_remote_events_total'),
          fallbacks: d('triage_fallback_total'),
          deadlineExceeded: d('triage_deadline_exceeded_total'),
          shed: d('triage_shed_total'),
          cpuCores:
            triageCpuBefore !== undefined && triageCpuAfter !== undefined
              ? (triageCpuAfter - triageCpuBefore) / 1000 / measured.durationSec
              : Number.NaN,
        };
        fakeDuringTriage = statsDelta(fakeBefore, fakeAfter);
        ctx.log(
          `  triage → fake                  ${fmt(measured.rps, 0)} rps, p50 ${fmt(measured.p50Ms)} ms, p99 ${fmt(measured.p99Ms)} ms` +
            (measured.non2xx || measured.socketErrors
              ? `  [${measured.non2xx} non-2xx, ${measured.socketErrors} socket errors]`
              : ''),
        );
        if (measured.non2xx > 0 || measured.socketErrors > 0) {
          errors.push(
            `triage: ${measured.non2xx} non-2xx (504 deadline: ${gateway.deadlineExceeded}, 503 shed: ${gateway.shed}, ` +
              `fallbacks: ${gateway.fallbacks}), ${measured.socketErrors} socket errors in the measured run`,
          );
        }
        if (measured.requests === 0) errors.push('triage: no requests completed');
        if (warmup && (warmup.non2xx > 0 || warmup.socketErrors > 0)) {
          notes.push(`triage warm-up: ${warmup.non2xx} non-2xx, ${warmup.socketErrors} socket errors (not counted)`);
        }
      } finally {
        await triage.stop();
      }
      if (triage.child.exitStatus !== 0 && triage.child.exitStatus !== 'SIGTERM') {
        notes.push(`Triage exited with ${triage.child.exitStatus}`);
      }

      const directFake = statsDelta(fakeBeforeDirect, fakeAfterDirect);
      for (const [who, s] of [
        ['direct', directFake],
        ['triage', fakeDuringTriage],
      ] as const) {
        if (s && s.faults > 0) errors.push(`the fake answered ${s.faults} ${who} calls with a fault (bad signature?)`);
      }

      const overhead = measured
        ? {
            rpsRatio: measured.rps / direct.rps,
            p50AddedMs: measured.p50Ms - direct.p50Ms,
            p99AddedMs: measured.p99Ms - direct.p99Ms,
          }
        : undefined;
      ctx.log();
      const head = ['target', 'requests', 'rps', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'errors'];
      const table = [
        [
          'direct SDK → fake',
          String(direct.requests),
          fmt(direct.rps, 0),
          fmt(direct.p50Ms),
          fmt(direct.p90Ms),
          fmt(direct.p99Ms),
          fmt(direct.maxMs),
          String(direct.errors),
        ],
        [
          'triage → fake',
          measured ? String(measured.requests) : '-',
          fmt(measured?.rps, 0),
          fmt(measured?.p50Ms),
          fmt(measured?.p90Ms),
          fmt(measured?.p99Ms),
          fmt(measured?.maxMs),
          measured ? String(measured.non2xx + measured.socketErrors) : '-',
        ],
      ];
      const widths = head.map((h, i) => Math.max(h.length, ...table.map((r) => (r[i] as string).length)));
      const line = (cells: string[]) =>
        cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] as number) : c.padStart(widths[i] as number))).join('  ');
      ctx.log(line(head));
      ctx.log(widths.map((w) => '-'.repeat(w)).join('  '));
      for (const r of table) ctx.log(line(r));
      if (ctx.load.tool === 'autocannon') ctx.log('(autocannon reports latency percentiles in whole milliseconds)');
      ctx.log();
      if (overhead) {
        const sign = (n: number) => (n >= 0 ? '+' : '');
        ctx.log(
          'gateway overhead over the SDK calling the fake directly (issue 5; informational, no target): ' +
            `rps ${fmt(overhead.rpsRatio * 100, 1)}% of direct, p50 ${sign(overhead.p50AddedMs)}${fmt(overhead.p50AddedMs)} ms, ` +
            `p99 ${sign(overhead.p99AddedMs)}${fmt(overhead.p99AddedMs)} ms`,
        );
      }
      const perCall = (s: FakeStats | undefined) => (s && s.calls > 0 ? fmt(s.rows / s.calls) : '-');
      ctx.log(
        `  fake (SigV4 verified on each call): ${directFake.calls} InvokeEndpoint calls during the direct run ` +
          `(warm-up included, ${perCall(directFake)} rows/call); ${fakeDuringTriage?.calls ?? '-'} during the Triage ` +
          `measured window (${perCall(fakeDuringTriage)} rows/call)`,
      );
      if (gateway) {
        ctx.log(
          `  Triage measured window: remote events (retries, timeouts, breaker) ${gateway.remoteEvents}, ` +
            `fallbacks ${gateway.fallbacks}, 504 deadline ${gateway.deadlineExceeded}, 503 shed ${gateway.shed}`,
        );
      }
      const cpuPerCall = (st: FakeStats | undefined) => (st && st.calls > 0 ? fmt(st.cpuMs / st.calls, 3) : '-');
      ctx.log(
        `  CPU (2 cores shared by everything): direct SDK process ${fmt(direct.cpuCores)} cores over its measured ` +
          `window; Triage ${fmt(gateway?.cpuCores)} cores over its window (${ctx.load.tool} not counted); the fake ` +
          `${cpuPerCall(directFake)} ms CPU/call during the direct run, ${cpuPerCall(fakeDuringTriage)} ms/call during ` +
          `Triage's` +
          (measured && fakeDuringTriage ? ` (${fmt(fakeDuringTriage.cpuMs / 1000 / measured.durationSec)} cores)` : ''),
      );
      for (const n of notes) ctx.log(`note: ${n}`);

      return {
        data: {
          settings,
          fakeUrl: fake.url,
          direct,
          triage: measured ? { warmup, measured, gateway, probe } : undefined,
          overhead,
          fake: { direct: directFake, triage: fakeDuringTriage },
          notes,
        },
        errors,
      };
    } finally {
      await ctx.children.stop(fake.child);
      if (modelsDir) rmSync(modelsDir, { recursive: true, force: true });
    }
  },
};
