/**
 * `npm run bench`: the in-repo benchmark harness. Runs each selected section (BENCH_SECTIONS, comma-separated;
 * default all) against Triage started as a child process, prints a report and writes the results as JSON to
 * bench-results/bench-<timestamp>.json and bench-results/latest.json.
 *
 * Exit status: 0 when every section ran cleanly, even if a performance goal was missed (goals are informational);
 * 1 when a server failed to start, a child died, or a load run saw errors (non-2xx, socket errors).
 *
 * env: BENCH_SECTIONS (sync,taps,async,batch,shadow,sagemaker,overload), BENCH_DURATION (s per target, default 10), BENCH_WARMUP (s, default 2),
 * BENCH_CONNECTIONS (default 32), BENCH_LOADGEN (wrk | autocannon; default wrk when on PATH), BENCH_WRK_THREADS (1),
 * BENCH_ONNX_RUNS (2000), BENCH_MONITORING_OFF=0 (skip the Triage with TRIAGE_MONITORING=off measured beside the default one),
 * BENCH_ACCESS_LOG=0 (skip the extra Triage run with access logs on at info level), BENCH_CPU_PROF=1 (profile
 * the Triage child, print its top self-time functions; slows it down).
 *
 * Sections: sync (sync.ts: with monitoring on and off), taps (taps.ts: the accountability taps per scoring), async
 * (async.ts: jobs vs raw BullMQ, run before and after Triage; CPU per job beside jobs/s), batch (batch.ts: batch runs vs raw onnxruntime, RSS,
 * sync p99 during a run), shadow (shadow.ts: 100% shadow mirroring on vs off), sagemaker (sagemaker.ts: predict on a
 * SageMaker-fake-backed version vs the SDK calling the fake directly).
 *   sync:   BENCH_SYNC_ROUNDS (3: bare, news2 and news2 with the access log measured in that many alternating rounds;
 *           the goals' verdict is the median of the rounds' ratios)
 *   async:  BENCH_ASYNC_JOBS (2000), BENCH_ASYNC_SUBMITTERS (= BENCH_CONNECTIONS), BENCH_ASYNC_CONCURRENCY (worker
 *           concurrency, 4), BENCH_ASYNC_IDLE_JOBS (50), BENCH_ASYNC_IDLE_WARMUP (10), BENCH_ASYNC_POLL_MS (2)
 *   batch:  BENCH_BATCH_MODEL (news2), BENCH_BATCH_ROWS (200000), BENCH_BATCH_ROWS_ROUNDS (2: raw and Triage's 1× run
 *           alternated, the verdict on the mean of the rounds' ratios), BENCH_BATCH_RSS_FACTOR (10), BENCH_BATCH_LOAD_SEC (5),
 *           BENCH_BATCH_LOAD_WARMUP (min(BENCH_WARMUP, 2)), BENCH_BATCH_LOAD_ROUNDS (2), BENCH_BATCH_POLL_MS (50),
 *           BENCH_BATCH_TIMEOUT_SEC (600), BENCH_BATCH_KEEP_OUTPUT (a directory: the 1× run's files are copied there, to
 *           compare two checkouts' output bytes)
 *   taps:   BENCH_TAP_CALLS (100000)
 *   shadow: BENCH_SHADOW_ROUNDS (2), BENCH_SHADOW_DURATION (BENCH_DURATION / rounds), BENCH_SHADOW_WARMUP (BENCH_WARMUP)
 *   sagemaker: BENCH_SAGEMAKER_DURATION (min(8, BENCH_DURATION)), BENCH_SAGEMAKER_WARMUP (BENCH_WARMUP)
 *   overload: BENCH_OVERLOAD_DURATION (s per phase, max(5, BENCH_DURATION)), BENCH_OVERLOAD_FACTOR (peak rate / capacity, 2),
 *             BENCH_OVERLOAD_MAX_IN_FLIGHT (1500), BENCH_OVERLOAD_RAMP (s of climb from the baseline to the peak, 5; the
 *             accepted p99 is over the climb and the hold, as overload.js's threshold is over its ramp and hold)
 * Every section: BENCH_LISTEN_SOCKETS (the gateway's TRIAGE_LISTEN_SOCKETS; its default otherwise). Several sockets on
 * one port need Node 22.12+: run the bench with that Node to measure them (the gateway is started with the bench's).
 * All sections with defaults take about 3.5-4 minutes on 2 cores.
 *
 * Adding a section: write a `Section` under load-tests/bench/ and list it below.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { asyncSection } from './bench/async.ts';
import { batchSection } from './bench/batch.ts';
import { Children } from './bench/children.ts';
import { cpuTicks, hostShare } from './bench/common.ts';
import type { BenchContext, BenchSettings, Section } from './bench/context.ts';
import { pickLoadGenerator } from './bench/load.ts';
import { overloadSection } from './bench/overload.ts';
import { sagemakerSection } from './bench/sagemaker.ts';
import { shadowSection } from './bench/shadow.ts';
import { syncSection } from './bench/sync.ts';
import { tapsSection } from './bench/taps.ts';

const sections: Section[] = [
  syncSection,
  tapsSection,
  asyncSection,
  batchSection,
  shadowSection,
  sagemakerSection,
  overloadSection,
];

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function numberEnv(name: string, fallback: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min) throw new Error(`${name} must be a number ≥ ${min}, got "${raw}"`);
  return n;
}

const flag = (name: string) => ['1', 'true', 'yes'].includes((process.env[name] ?? '').toLowerCase());

function selectSections(): Section[] {
  const wanted = (process.env.BENCH_SECTIONS ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (wanted.length === 0) return sections;
  const unknown = wanted.filter((w) => !sections.some((s) => s.name === w));
  if (unknown.length > 0) {
    throw new Error(
      `BENCH_SECTIONS: unknown section(s) ${unknown.join(', ')}; known: ${sections.map((s) => s.name).join(', ')}`,
    );
  }
  return sections.filter((s) => wanted.includes(s.name));
}

function git(args: string[]): string | undefined {
  const r = spawnSync('git', args, { cwd: repoRoot, encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

async function main(): Promise<number> {
  const startedAt = new Date();
  const children = new Children();
  children.installExitHandlers(async (signal) => {
    console.error(`\nbench: ${signal}: stopping children`);
    await children.stopAll(2000);
  });

  const settings: BenchSettings = {
    durationSec: numberEnv('BENCH_DURATION', 10, 1),
    warmupSec: numberEnv('BENCH_WARMUP', 2, 0),
    connections: numberEnv('BENCH_CONNECTIONS', 32, 1),
    accessLogVariant: !['0', 'false', 'no'].includes((process.env.BENCH_ACCESS_LOG ?? '').toLowerCase()),
    cpuProfile: flag('BENCH_CPU_PROF'),
  };
  const selected = selectSections();
  const resultsDir = path.join(repoRoot, 'bench-results');
  mkdirSync(resultsDir, { recursive: true });
  const load = pickLoadGenerator(children, repoRoot, process.env.BENCH_LOADGEN || undefined);
  const redisUrl = process.env.TRIAGE_REDIS_URL || undefined;
  const ctx: BenchContext = {
    repoRoot,
    modelsDir: path.join(repoRoot, 'models'),
    resultsDir,
    redisUrl,
    settings,
    children,
    load,
    log: (line = '') => console.log(line),
  };

  // Triage runs as production runs it: the compiled build (npm run build), not TypeScript through tsx
  const build = spawnSync('npm', ['run', '--silent', 'build'], { cwd: repoRoot, encoding: 'utf8' });
  if (build.status !== 0) throw new Error(`npm run build failed:\n${build.stdout}${build.stderr}`);

  const commit = git(['rev-parse', '--short', 'HEAD']);
  const dirty = (git(['status', '--porcelain']) ?? '') !== '';
  ctx.log(
    `Triage bench ${startedAt.toISOString()}  commit ${commit ?? '?'}${dirty ? ' (dirty)' : ''}  node ${process.version}  ` +
      `${os.cpus().length} CPUs  load: ${load.tool}`,
  );
  if (!redisUrl)
    ctx.log('warning: TRIAGE_REDIS_URL is not set (run through `npm run bench`): Triage will try 127.0.0.1:6379');

  const report: Record<string, unknown> = {};
  const hostShares: Record<string, ReturnType<typeof hostShare>> = {};
  const errors: string[] = [];
  try {
    for (const section of selected) {
      ctx.log();
      ctx.log(`== ${section.name}: ${section.description}`);
      const ticksBefore = cpuTicks();
      try {
        const result = await section.run(ctx);
        report[section.name] = result.data;
        errors.push(...result.errors.map((e) => `${section.name}: ${e}`));
      } catch (err) {
        errors.push(`${section.name}: ${(err as Error).message}`);
        report[section.name] = { failed: (err as Error).message };
      } finally {
        // a section leaves nothing running behind it
        await children.stopAll();
      }
      const host = hostShare(ticksBefore, cpuTicks());
      if (host) {
        ctx.log(
          `host: ${host.stealPercent.toFixed(1)}% of this section's CPU time was stolen by the hypervisor, ` +
            `${host.idlePercent.toFixed(1)}% idle (/proc/stat)`,
        );
        hostShares[section.name] = host;
      }
    }
  } finally {
    load.close();
    await children.stopAll();
  }

  const finishedAt = new Date();
  const exitCode = errors.length > 0 ? 1 : 0;
  const results = {
    schema: 1,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    elapsedSec: (finishedAt.getTime() - startedAt.getTime()) / 1000,
    git: { commit, dirty },
    host: {
      node: process.version,
      platform: `${os.platform()} ${os.release()}`,
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      /** per section: the share of the machine's CPU time the hypervisor took (steal) and left idle */
      sections: hostShares,
    },
    loadGenerator: { tool: load.tool, version: load.version },
    sections: report,
    errors,
    exitCode,
  };
  const stamp = startedAt.toISOString().replace(/[:.]/g, '-');
  const file = path.join(resultsDir, `bench-${stamp}.json`);
  const text = `${JSON.stringify(results, null, 2)}\n`;
  writeFileSync(file, text);
  writeFileSync(path.join(resultsDir, 'latest.json'), text);

  ctx.log();
  if (errors.length > 0) {
    ctx.log('ERRORS:');
    for (const e of errors) ctx.log(`  ${e.replaceAll('\n', '\n    ')}`);
  }
  ctx.log(
    `results: ${path.relative(repoRoot, file)} (and bench-results/latest.json), ${results.elapsedSec.toFixed(1)} s`,
  );
  return exitCode;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(`bench: ${(err as Error).stack ?? err}`);
    process.exit(1);
  },
);
