import { once } from 'node:events';
import { createReadStream, createWriteStream, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DEFAULT_CHUNK_SIZE } from '../../src/batch/chunk.ts';
import { loadConfig } from '../../src/platform/config.ts';
import { loadModel } from '../../src/registry/load.ts';
import {
  envNumber,
  fmt,
  HttpClient,
  logProfile,
  passFail,
  procCpuMs,
  procMemory,
  runJsonChild,
  sampleRss,
  sleep,
} from './common.ts';
import type { BenchContext, Section, SectionResult } from './context.ts';
import type { LoadResult } from './load.ts';
import { writeRows } from './rows.ts';
import { NEWS2_INSTANCE } from './sync.ts';
import { startTriage, type TriageProcess } from './triage.ts';

/**
 * Issue 11 (bedside first): rows/s ≥ 70% of raw onnxruntime, sync p99 during a run ≤ 1.2× alone; issue 4: peak RSS
 * grows < 20% for a 10× input.
 */
export const BATCH_GOALS = { minRowsRatio: 0.7, maxRssGrowth: 0.2, maxP99Ratio: 1.2 };

/** `times` copies of `source` into `target` (the 10× input: the same rows again, ids repeat). */
async function repeatFile(source: string, target: string, times: number): Promise<void> {
  const out = createWriteStream(target);
  for (let i = 0; i < times; i++) {
    for await (const chunk of createReadStream(source, { highWaterMark: 1 << 20 })) {
      if (!out.write(chunk)) await once(out, 'drain');
    }
  }
  out.end();
  await once(out, 'finish');
}

interface RunOutcome {
  id: string;
  wallMs: number;
  rowsPerSec: number;
  scored: number;
  failed: number;
  serverDurationMs: number | undefined;
  /** POST → the first GET that shows rows read (queue pickup, thread start, model load, first chunk) */
  firstRowsMs: number | undefined;
  /** rows/s from that first poll to the end: the run without its fixed start-up cost */
  steadyRowsPerSec: number | undefined;
  polls: number;
  /** the Triage process's CPU time (every thread: the run's batch thread, the gateway answering the polls) per row */
  cpuMsPerRow: number | undefined;
  rss?: {
    beforeMiB: number;
    peakMiB: number;
    hwmBeforeMiB: number;
    hwmAfterMiB: number;
    samples: number;
    quarterPeaksMiB: number[];
  };
}

/** POST …/batches, then GET /v1/batches/:id every `pollMs` until 200 (the Bulk Data manifest). */
async function batchRun(
  http: HttpClient,
  model: string,
  file: string,
  pollMs: number,
  timeoutMs: number,
  pid?: number,
): Promise<RunOutcome> {
  const memBefore = pid ? procMemory(pid) : undefined;
  const cpuBefore = procCpuMs(pid);
  const sampler = pid ? sampleRss(pid, 100) : undefined;
  const t0 = performance.now();
  const submitted = await http.json<{ id?: string }>('POST', `/v1/models/${model}/batches`, {
    input: { path: file, format: 'ndjson' },
  });
  if (submitted.status !== 202 || !submitted.body.id) {
    sampler?.stop();
    throw new Error(`POST /v1/models/${model}/batches answered ${submitted.status}: ${JSON.stringify(submitted.body)}`);
  }
  const id = submitted.body.id;
  const deadline = t0 + timeoutMs;
  let polls = 0;
  let firstRowsMs: number | undefined;
  let firstRows = 0;
  for (;;) {
    await sleep(pollMs);
    const r = await http.json<{
      output?: Array<{ type: string; count: number }>;
      error?: Array<{ count: number }>;
      extension?: { durationMs?: number };
      rowsRead?: number;
    }>('GET', `/v1/batches/${id}`);
    polls++;
    if (firstRowsMs === undefined && ((r.status === 202 && (r.body.rowsRead ?? 0) > 0) || r.status === 200)) {
      firstRowsMs = performance.now() - t0;
      firstRows = r.status === 202 ? (r.body.rowsRead ?? 0) : 0;
    }
    if (r.status === 200) {
      const wallMs = performance.now() - t0;
      const peak = sampler?.stop();
      const memAfter = pid ? procMemory(pid) : undefined;
      const cpuAfter = procCpuMs(pid);
      const scored = r.body.output?.find((o) => o.type === 'Prediction')?.count ?? 0;
      const failed = (r.body.error ?? []).reduce((a, e) => a + e.count, 0);
      return {
        id,
        wallMs,
        rowsPerSec: ((scored + failed) * 1000) / wallMs,
        scored,
        failed,
        serverDurationMs: r.body.extension?.durationMs,
        firstRowsMs,
        steadyRowsPerSec:
          firstRowsMs !== undefined && firstRows > 0 && wallMs > firstRowsMs
            ? ((scored + failed - firstRows) * 1000) / (wallMs - firstRowsMs)
            : undefined,
        polls,
        cpuMsPerRow:
          cpuBefore !== undefined && cpuAfter !== undefined && scored + failed > 0
            ? (cpuAfter - cpuBefore) / (scored + failed)
            : undefined,
        ...(memBefore && memAfter && peak
          ? {
              rss: {
                beforeMiB: memBefore.rssMiB,
                peakMiB: peak.peakMiB,
                hwmBeforeMiB: memBefore.hwmMiB,
                hwmAfterMiB: memAfter.hwmMiB,
                samples: peak.samples,
                quarterPeaksMiB: peak.quarterPeaksMiB,
              },
            }
          : {}),
      };
    }
    if (r.status !== 202) {
      sampler?.stop();
      throw new Error(`batch run ${id}: GET answered ${r.status}: ${JSON.stringify(r.body).slice(0, 400)}`);
    }
    if (performance.now() > deadline) {
      sampler?.stop();
      await http.request('DELETE', `/v1/batches/${id}`).catch(() => undefined);
      throw new Error(`batch run ${id} not done after ${timeoutMs} ms (${r.headers['x-progress']})`);
    }
  }
}

export const batchSection: Section = {
  name: 'batch',
  description: 'batch runs: rows/s vs raw onnxruntime-node, peak RSS at 10× input, sync p99 while a run scores',
  async run(ctx: BenchContext): Promise<SectionResult> {
    const errors: string[] = [];
    const notes: string[] = [];
    const model = process.env.BENCH_BATCH_MODEL || 'news2';
    const rows = envNumber('BENCH_BATCH_ROWS', 200_000, 1);
    const factor = envNumber('BENCH_BATCH_RSS_FACTOR', 10, 1);
    const loadSec = envNumber('BENCH_BATCH_LOAD_SEC', 5, 1);
    const loadRounds = envNumber('BENCH_BATCH_LOAD_ROUNDS', 2, 1);
    const rowsRounds = envNumber('BENCH_BATCH_ROWS_ROUNDS', 2, 1);
    const loadWarmupSec = envNumber('BENCH_BATCH_LOAD_WARMUP', Math.min(ctx.settings.warmupSec, 2), 0);
    const pollMs = envNumber('BENCH_BATCH_POLL_MS', 50, 1);
    const timeoutMs = envNumber('BENCH_BATCH_TIMEOUT_SEC', 600, 1) * 1000;

    const loaded = await loadModel(path.join(ctx.modelsDir, model), ctx.modelsDir, 60_000);
    // the chunk a run scores in, and the priority its thread scores at: the baseline gets the same
    const chunkSize = loaded.manifest.batch?.chunkSize ?? DEFAULT_CHUNK_SIZE;
    // (the Triage child runs on the defaults: startTriage leaves the caller's TRIAGE_* settings out)
    const nice = loadConfig({}).batchNice;
    const shadow = loaded.manifest.routing.shadow;
    const settings = {
      model,
      rows,
      factor,
      chunkSize,
      nice,
      loadSec,
      loadWarmupSec,
      loadRounds,
      rowsRounds,
      pollMs,
      shadow: shadow ?? null,
    };
    if (shadow) {
      notes.push(
        `${model} mirrors ${shadow.versions.join(',')} in shadow: a Triage batch run also scores (and writes) every row ` +
          `with each shadow version, the raw baseline does not`,
      );
    }

    // 1. inputs in a fresh data directory
    const dataDir = mkdtempSync(path.join(tmpdir(), 'triage-bench-batch-'));
    let triage: TriageProcess | undefined;
    let http: HttpClient | undefined;
    try {
      const small = 'bench-1x.ndjson';
      // its own name even at BENCH_BATCH_RSS_FACTOR=1 (the same name had the copy truncate its own source)
      const large = `bench-rss-${factor}x.ndjson`;
      const started = Date.now();
      // the bench client's own data area: inputs are named relative to it
      const area = path.join(dataDir, 'clients', 'bench-client');
      mkdirSync(area, { recursive: true });
      await writeRows(path.join(area, small), loaded.manifest.features, rows);
      await repeatFile(path.join(area, small), path.join(area, large), factor);
      const mib = (f: string) => statSync(path.join(area, f)).size / 2 ** 20;
      ctx.log(
        `inputs: ${rows} rows of ${model} features (${fmt(mib(small), 1)} MiB) and ${factor}× (${fmt(mib(large), 0)} MiB) ` +
          `written in ${fmt((Date.now() - started) / 1000, 1)} s; chunk size ${chunkSize}; batch nice ${nice}` +
          (shadow ? `; shadow ${shadow.versions.join(',')} at ${shadow.sampleRate}` : ''),
      );

      // 2. baseline: raw onnxruntime-node over the same file, same chunk size, in its own process
      const runRaw = async () => {
        const r = await runJsonChild<{ rows: number; ms: number; rowsPerSec: number; chunks: number; cpuMs?: number }>(
          ctx.children,
          'raw batch',
          path.join(ctx.repoRoot, 'load-tests', 'bench', 'raw-batch.ts'),
          {
            RAW_MODELS_DIR: ctx.modelsDir,
            RAW_MODEL: model,
            RAW_INPUT: path.join(dataDir, 'clients', 'bench-client', small),
            RAW_OUTPUT: path.join(dataDir, 'raw-output.ndjson'),
            RAW_THREADS: '1',
            RAW_CHUNK: String(chunkSize),
            RAW_NICE: String(nice),
          },
          { cwd: ctx.repoRoot, marker: 'RAW_JSON', timeoutMs },
        );
        rmSync(path.join(dataDir, 'raw-output.ndjson'), { force: true });
        ctx.log(
          `  raw onnxruntime (nice ${nice}) ${r.rows} rows in ${fmt(r.ms / 1000)} s = ${fmt(r.rowsPerSec, 0)} rows/s` +
            (r.cpuMs !== undefined ? `, ${fmt((r.cpuMs * 1000) / r.rows, 2)} µs CPU per row` : ''),
        );
        return r;
      };
      const raw = await runRaw();

      // 3. Triage, its data directory = ours
      const profDir = ctx.settings.cpuProfile
        ? path.join(ctx.resultsDir, 'profiles', `triage-batch-${Date.now()}`)
        : undefined;
      if (profDir) mkdirSync(profDir, { recursive: true });
      triage = await startTriage(ctx, {
        name: 'triage (batch)',
        logLevel: 'warn',
        accessLog: false,
        env: { TRIAGE_DATA_DIR: dataDir, TRIAGE_WORKERS: 'all' },
        ...(profDir ? { cpuProfDir: profDir } : {}),
      });
      const pid = triage.child.proc.pid as number;
      http = new HttpClient(triage.url, { authorization: `Bearer ${triage.clientKey}` });
      const idleMem = procMemory(pid);
      ctx.log(`  Triage ready: RSS ${fmt(idleMem?.rssMiB, 0)} MiB (VmHWM ${fmt(idleMem?.hwmMiB, 0)} MiB)`);

      // 4. 1× run: throughput and the RSS reference
      const one = await batchRun(http, model, small, pollMs, timeoutMs, pid);
      ctx.log(
        `  triage 1×          ${one.scored + one.failed} rows in ${fmt(one.wallMs / 1000)} s = ${fmt(one.rowsPerSec, 0)} rows/s ` +
          `(POST → 200; server-side run ${fmt((one.serverDurationMs ?? 0) / 1000)} s; first rows after ` +
          `${fmt((one.firstRowsMs ?? 0) / 1000)} s, ${fmt(one.steadyRowsPerSec, 0)} rows/s after that), peak RSS ` +
          `${fmt(one.rss?.peakMiB, 0)} MiB, ${fmt((one.cpuMsPerRow ?? Number.NaN) * 1000, 2)} µs CPU per row (process)`,
      );
      if (one.scored !== rows) errors.push(`1× run scored ${one.scored} of ${rows} rows (${one.failed} failed)`);
      // more rounds of the rows/s pair (raw, then Triage's 1× run): each Triage run against the raw run just before
      // it, the verdict on their mean (a shared machine moved raw onnxruntime alone from 77k to 116k rows/s between
      // rounds). The first 1× run stays the RSS reference.
      const pairs = [{ raw: raw.rowsPerSec, triage: one.rowsPerSec }];
      for (let round = 2; round <= rowsRounds; round++) {
        const r = await runRaw();
        const again = await batchRun(http, model, small, pollMs, timeoutMs, pid);
        ctx.log(
          `  triage 1× (${round})      ${again.scored + again.failed} rows in ${fmt(again.wallMs / 1000)} s = ` +
            `${fmt(again.rowsPerSec, 0)} rows/s (first rows after ${fmt((again.firstRowsMs ?? 0) / 1000)} s)`,
        );
        if (again.scored !== rows) errors.push(`1× run (${round}) scored ${again.scored} of ${rows} rows`);
        pairs.push({ raw: r.rowsPerSec, triage: again.rowsPerSec });
      }
      const keep = process.env.BENCH_BATCH_KEEP_OUTPUT;
      if (keep) {
        const { cpSync, readdirSync: ls } = await import('node:fs');
        const walk = (dir: string): void => {
          for (const e of ls(dir, { withFileTypes: true })) {
            const p = path.join(dir, e.name);
            if (e.isDirectory()) {
              if (e.name.startsWith(`${one.id}.`)) cpSync(p, keep, { recursive: true });
              else walk(p);
            }
          }
        };
        walk(dataDir);
      }

      // 5. 10× run: peak RSS
      const big = await batchRun(http, model, large, pollMs, timeoutMs, pid);
      ctx.log(
        `  triage ${factor}×         ${big.scored + big.failed} rows in ${fmt(big.wallMs / 1000)} s = ${fmt(big.rowsPerSec, 0)} rows/s (first rows after ` +
          `${fmt((big.firstRowsMs ?? 0) / 1000)} s, ${fmt(big.steadyRowsPerSec, 0)} rows/s after that), ` +
          `peak RSS ${fmt(big.rss?.peakMiB, 0)} MiB (VmHWM ${fmt(big.rss?.hwmBeforeMiB, 0)} → ${fmt(big.rss?.hwmAfterMiB, 0)} MiB; ` +
          `peak per quarter of the run ${big.rss?.quarterPeaksMiB.map((v) => fmt(v, 0)).join(' / ')} MiB)`,
      );
      if (big.scored !== rows * factor) errors.push(`${factor}× run scored ${big.scored} of ${rows * factor} rows`);

      // 6. sync predict p99: alone, then while a (long) batch run scores
      const spec = {
        url: `${triage.url}/v1/models/news2/predict`,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${triage.clientKey}` },
        body: JSON.stringify({ instances: [NEWS2_INSTANCE] }),
        connections: ctx.settings.connections,
      };
      const measure = async (name: string): Promise<LoadResult> => {
        if (loadWarmupSec > 0) await ctx.load.run({ ...spec, name: `${name} warm-up`, durationSec: loadWarmupSec });
        return ctx.load.run({ ...spec, name, durationSec: loadSec });
      };
      // alternating windows (alone, during, alone, during…): the background load of a shared machine drifts
      const api = http;
      const duringRun = async (round: number) => {
        const submitted = await api.json<{ id?: string }>('POST', `/v1/models/${model}/batches`, {
          input: { path: large, format: 'ndjson' },
        });
        const id = submitted.body.id;
        if (submitted.status !== 202 || !id) throw new Error(`POST batches answered ${submitted.status}`);
        // wait until it is scoring: the thread has started and committed a chunk
        const waitUntil = performance.now() + 30_000;
        for (;;) {
          const r = await api.json<{ state: string; rowsRead: number }>('GET', `/v1/batches/${id}`);
          if (r.status === 202 && r.body.state === 'running' && r.body.rowsRead > 0) break;
          if (r.status !== 202) throw new Error(`batch run ${id} ended before the load started (HTTP ${r.status})`);
          if (performance.now() > waitUntil) throw new Error(`batch run ${id} not scoring after 30 s`);
          await sleep(20);
        }
        const before = await api.json<{ rowsRead: number }>('GET', `/v1/batches/${id}`);
        const t = performance.now();
        const result = await measure(`batch: sync during a run (${round})`);
        const after = await api.json<{ state: string; rowsRead: number }>('GET', `/v1/batches/${id}`);
        const seconds = (performance.now() - t) / 1000;
        const stillRunning = after.status === 202;
        if (!stillRunning) notes.push(`round ${round}: the batch run finished before the load did`);
        await api.request('DELETE', `/v1/batches/${id}`);
        // the run's thread stops at its next chunk boundary
        await sleep(300);
        const rowsScored = (after.body.rowsRead ?? rows * factor) - (before.body.rowsRead ?? 0);
        return { result, stillRunning, rowsPerSec: rowsScored / seconds };
      };
      const windows: Array<{
        round: number;
        alone: LoadResult;
        during: LoadResult;
        stillRunning: boolean;
        batchRowsPerSec: number;
      }> = [];
      for (let round = 1; round <= loadRounds; round++) {
        const alone = await measure(`batch: sync alone (${round})`);
        const d = await duringRun(round);
        windows.push({ round, alone, during: d.result, stillRunning: d.stillRunning, batchRowsPerSec: d.rowsPerSec });
        for (const [label, r] of [
          ['alone', alone],
          ['during a batch run', d.result],
        ] as const) {
          if (r.non2xx > 0 || r.socketErrors > 0) {
            errors.push(`sync ${label} (round ${round}): ${r.non2xx} non-2xx, ${r.socketErrors} socket errors`);
          }
        }
        const line = (r: LoadResult) =>
          `${fmt(r.rps, 0)} rps, p50 ${fmt(r.p50Ms)} ms, p99 ${fmt(r.p99Ms)} ms` +
          (r.non2xx ? ` [${r.non2xx} non-2xx]` : '');
        ctx.log(`  sync news2 alone (${round})               ${line(alone)}`);
        ctx.log(
          `  sync news2 during a batch run (${round})  ${line(d.result)} (the run scored ${fmt(d.rowsPerSec, 0)} rows/s meanwhile)`,
        );
      }
      const meanP99 = (pick: (w: (typeof windows)[number]) => LoadResult) =>
        windows.reduce((a, w) => a + pick(w).p99Ms, 0) / windows.length;
      const aloneP99 = meanP99((w) => w.alone);
      const duringP99 = meanP99((w) => w.during);
      const p99Ratio = duringP99 / aloneP99;

      // 7. verdicts
      const pairRatios = pairs.map((x) => x.triage / x.raw);
      const rowsRatio = pairRatios.reduce((a, x) => a + x, 0) / pairRatios.length;
      const rssGrowth = one.rss && big.rss ? big.rss.peakMiB / one.rss.peakMiB - 1 : Number.NaN;
      const comparison = {
        rowsRatio,
        rowsPass: rowsRatio >= BATCH_GOALS.minRowsRatio,
        rssGrowth,
        rssPass: rssGrowth < BATCH_GOALS.maxRssGrowth,
        p99Ratio,
        p99Pass: p99Ratio <= BATCH_GOALS.maxP99Ratio,
      };
      ctx.log();
      ctx.log(
        `goals (issues 11 and 4): rows/s ≥ ${BATCH_GOALS.minRowsRatio * 100}% of raw (1× run, POST → manifest); peak RSS at ${factor}× input grows < ` +
          `${BATCH_GOALS.maxRssGrowth * 100}%; sync p99 during a run ≤ ${BATCH_GOALS.maxP99Ratio}× alone`,
      );
      const meanOf = (pick: (x: (typeof pairs)[number]) => number) =>
        pairs.reduce((a, x) => a + pick(x), 0) / pairs.length;
      ctx.log(
        `  rows/s       triage ${fmt(
          meanOf((x) => x.triage),
          0,
        )} vs raw onnxruntime ${fmt(
          meanOf((x) => x.raw),
          0,
        )} = ` +
          `${fmt(rowsRatio * 100, 1)}% ${passFail(comparison.rowsPass)}` +
          (pairs.length > 1
            ? ` (mean of ${pairs.length} rounds' ratios: ${pairRatios.map((x) => `${fmt(x * 100, 1)}%`).join(', ')})`
            : ''),
      );
      ctx.log(
        `  peak RSS     ${factor}× ${fmt(big.rss?.peakMiB, 0)} MiB vs 1× ${fmt(one.rss?.peakMiB, 0)} MiB = ` +
          `${rssGrowth >= 0 ? '+' : ''}${fmt(rssGrowth * 100, 1)}% ${passFail(comparison.rssPass)}`,
      );
      ctx.log(
        `  sync p99     ${fmt(duringP99)} ms during vs ${fmt(aloneP99)} ms alone = ${fmt(p99Ratio)}× ` +
          `${passFail(comparison.p99Pass)}${windows.length > 1 ? ` (means of ${windows.length} alternating windows)` : ''}`,
      );
      for (const n of notes) ctx.log(`note: ${n}`);
      let profile: unknown;
      if (profDir) {
        await triage.stop();
        // one profile per thread: the gateway's main thread and one batch thread per run
        ctx.log();
        ctx.log(`profiles: ${readdirSync(profDir).length} threads in ${path.relative(ctx.repoRoot, profDir)}`);
        profile = logProfile(ctx, profDir, 'Triage (batch) busiest thread');
      }
      return {
        data: {
          profile,
          goals: BATCH_GOALS,
          settings,
          raw,
          rowsRounds: pairs,
          triage: { idleRssMiB: idleMem?.rssMiB, one, big },
          sync: { windows, aloneP99Ms: aloneP99, duringP99Ms: duringP99 },
          comparison,
          notes,
        },
        errors,
      };
    } finally {
      http?.close();
      await triage?.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  },
};
