import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { envNumber, fmt, HttpClient, logProfile, passFail, procCpuMs, sleep } from './common.ts';
import type { BenchContext, Section, SectionResult } from './context.ts';
import type { LoadResult } from './load.ts';
import { DETERIORATION_INSTANCE } from './sync.ts';
import { promSum, startTriage, type TriageProcess } from './triage.ts';

/** Issue 5: predict with 100% shadow mirroring ≥ 90% of the requests/s without it, p99 within 1.2×. */
export const SHADOW_GOALS = { minRpsRatio: 0.9, maxP99Ratio: 1.2 };

const MODEL = 'deterioration';

interface ModeResult {
  mode: 'off' | 'on';
  round: number;
  measured: LoadResult;
  /** from /metrics over the measured window */
  mirror: { pairs: number; dropped: number; errors: number; perRequest: number };
  /**
   * CPU time over the measured window (Linux /proc; undefined elsewhere): of the gateway's main thread, the one
   * bedside answers wait on, and of the whole process, in µs per request. Unlike p99 on a shared machine it hardly
   * depends on what else runs: what the shadows cost the event loop.
   */
  cpu?: { mainUsPerRequest: number; processUsPerRequest: number };
}

export const shadowSection: Section = {
  name: 'shadow',
  description: `sync predict (${MODEL}) with 100% shadow mirroring (v2) vs without, toggled through the admin API`,
  async run(ctx: BenchContext): Promise<SectionResult> {
    const errors: string[] = [];
    const notes: string[] = [];
    // alternating windows (off, on, off, on): a shared machine's background load drifts; the same total time as one
    // BENCH_DURATION window per mode
    const rounds = envNumber('BENCH_SHADOW_ROUNDS', 2, 1);
    const durationSec = envNumber(
      'BENCH_SHADOW_DURATION',
      Math.max(1, Math.round(ctx.settings.durationSec / rounds)),
      1,
    );
    const warmupSec = envNumber('BENCH_SHADOW_WARMUP', ctx.settings.warmupSec, 0);
    const settings = { durationSec, warmupSec, rounds, connections: ctx.settings.connections, model: MODEL };
    ctx.log(
      `load: ${ctx.load.tool}, ${ctx.settings.connections} connections, ${warmupSec} s warm-up + ${durationSec} s measured ` +
        `per mode; ${rounds} round(s) of shadow off → on`,
    );

    const profDir = ctx.settings.cpuProfile
      ? path.join(ctx.resultsDir, 'profiles', `triage-shadow-${Date.now()}`)
      : undefined;
    if (profDir) mkdirSync(profDir, { recursive: true });
    const triage: TriageProcess = await startTriage(ctx, {
      name: 'triage (shadow)',
      logLevel: 'warn',
      accessLog: false,
      adminKey: true,
      ...(profDir ? { cpuProfDir: profDir } : {}),
    });
    const admin = new HttpClient(triage.url, { authorization: `Bearer ${triage.adminKey}` });
    try {
      const body = JSON.stringify({ instances: [DETERIORATION_INSTANCE] });
      const headers = { 'content-type': 'application/json', authorization: `Bearer ${triage.clientKey}` };
      const url = `${triage.url}/v1/models/${MODEL}/predict`;
      const probe = await fetch(url, { method: 'POST', body, headers, signal: AbortSignal.timeout(5000) });
      const probeText = await probe.text();
      if (probe.status !== 200) throw new Error(`${MODEL} probe answered ${probe.status}: ${probeText}`);
      const initial = await admin.json<{ routing: { shadow?: unknown } }>('GET', `/v1/models/${MODEL}/routing`);
      if (initial.status !== 200) throw new Error(`GET routing answered ${initial.status}`);
      ctx.log(`  ${MODEL} routing at start: ${JSON.stringify(initial.body.routing)}`);

      const setShadow = async (on: boolean) => {
        const change = on
          ? { versions: ['2'], sampleRate: 1, reason: 'bench: shadow on' }
          : { versions: [], reason: 'bench: shadow off' };
        const r = await admin.json<{ routing: { shadow?: { versions: string[]; sampleRate: number } } }>(
          'PUT',
          `/v1/models/${MODEL}/routing/shadow`,
          change,
        );
        if (r.status !== 200) throw new Error(`PUT routing/shadow answered ${r.status}: ${JSON.stringify(r.body)}`);
        const shadow = r.body.routing.shadow;
        if (on ? !(shadow?.sampleRate === 1 && shadow.versions.includes('2')) : shadow !== undefined) {
          throw new Error(`PUT routing/shadow: unexpected routing ${JSON.stringify(r.body.routing)}`);
        }
      };

      const spec = { url, headers, body, connections: ctx.settings.connections };
      const results: ModeResult[] = [];
      for (let round = 1; round <= rounds; round++) {
        for (const mode of ['off', 'on'] as const) {
          await setShadow(mode === 'on');
          if (warmupSec > 0) await ctx.load.run({ ...spec, name: `shadow ${mode} warm-up`, durationSec: warmupSec });
          await sleep(200); // the warm-up's last mirrors land outside the window
          const before = await triage.scrape();
          const pid = triage.child.proc.pid;
          const cpuBefore = [procCpuMs(pid, pid), procCpuMs(pid)];
          const measured = await ctx.load.run({ ...spec, name: `shadow ${mode}`, durationSec });
          const cpuAfter = [procCpuMs(pid, pid), procCpuMs(pid)];
          await sleep(200);
          const after = await triage.scrape();
          const d = (name: string) => promSum(after, name, { model: MODEL }) - promSum(before, name, { model: MODEL });
          const pairs = d('triage_shadow_pairs_total');
          const mirror = {
            pairs,
            dropped: d('triage_shadow_dropped_total'),
            errors: d('triage_shadow_errors_total'),
            perRequest: measured.requests > 0 ? pairs / measured.requests : 0,
          };
          const perRequest = (i: number) =>
            (((cpuAfter[i] as number) - (cpuBefore[i] as number)) * 1e3) / Math.max(1, measured.requests);
          const cpu =
            cpuAfter.every((v) => v !== undefined) && cpuBefore.every((v) => v !== undefined)
              ? { mainUsPerRequest: perRequest(0), processUsPerRequest: perRequest(1) }
              : undefined;
          results.push({ mode, round, measured, mirror, ...(cpu ? { cpu } : {}) });
          ctx.log(
            `  shadow ${mode.padEnd(3)} ${rounds > 1 ? `(round ${round}) ` : ''}${fmt(measured.rps, 0)} rps, p50 ` +
              `${fmt(measured.p50Ms)} ms, p99 ${fmt(measured.p99Ms)} ms, max ${fmt(measured.maxMs)} ms; mirrored ` +
              `${mirror.pairs} pairs (${fmt(mirror.perRequest * 100, 1)}% of requests), dropped ${mirror.dropped}, ` +
              `errors ${mirror.errors}` +
              (cpu
                ? `; CPU µs/request: main thread ${fmt(cpu.mainUsPerRequest, 1)}, process ${fmt(cpu.processUsPerRequest, 1)}`
                : '') +
              (measured.non2xx || measured.socketErrors
                ? `  [${measured.non2xx} non-2xx, ${measured.socketErrors} socket errors]`
                : ''),
          );
          if (measured.non2xx > 0 || measured.socketErrors > 0) {
            errors.push(
              `shadow ${mode}: ${measured.non2xx} non-2xx, ${measured.socketErrors} socket errors in the measured run`,
            );
          }
          if (mode === 'on' && mirror.perRequest < 0.99) {
            notes.push(
              `shadow on (round ${round}): only ${fmt(mirror.perRequest * 100, 1)}% of requests mirrored (${mirror.dropped} dropped at the in-flight cap)`,
            );
          }
          if (mode === 'off' && mirror.pairs > 0)
            notes.push(`shadow off (round ${round}): ${mirror.pairs} pairs recorded`);
        }
      }
      const report = await admin.json<{ shadows: Array<{ version: string; pairs: number; agreementRate: number }> }>(
        'GET',
        `/v1/models/${MODEL}/shadow`,
      );

      // verdicts on the summed windows: requests/s over all rounds, p99 as the mean of the rounds' p99
      const agg = (mode: 'off' | 'on') => {
        const rs = results.filter((r) => r.mode === mode);
        const requests = rs.reduce((a, r) => a + r.measured.requests, 0);
        const seconds = rs.reduce((a, r) => a + r.measured.durationSec, 0);
        const cpu = (pick: (c: NonNullable<ModeResult['cpu']>) => number) =>
          rs.every((r) => r.cpu)
            ? rs.reduce((a, r) => a + pick(r.cpu as NonNullable<ModeResult['cpu']>) * r.measured.requests, 0) / requests
            : undefined;
        return {
          rps: requests / seconds,
          p99Ms: rs.reduce((a, r) => a + r.measured.p99Ms, 0) / rs.length,
          mainCpuUs: cpu((c) => c.mainUsPerRequest),
          processCpuUs: cpu((c) => c.processUsPerRequest),
          mirrored: rs.reduce((a, r) => a + r.mirror.pairs, 0) / Math.max(1, requests),
        };
      };
      const off = agg('off');
      const on = agg('on');
      const comparison = {
        rpsRatio: on.rps / off.rps,
        rpsPass: on.rps / off.rps >= SHADOW_GOALS.minRpsRatio,
        p99Ratio: on.p99Ms / off.p99Ms,
        p99Pass: on.p99Ms / off.p99Ms <= SHADOW_GOALS.maxP99Ratio,
      };
      ctx.log();
      ctx.log(
        `goals (issue 5): with 100% shadow ≥ ${SHADOW_GOALS.minRpsRatio * 100}% of the requests/s without, p99 within ` +
          `${SHADOW_GOALS.maxP99Ratio}×` +
          (rounds > 1 ? ` (requests/s pooled over ${rounds} windows per mode, p99 the mean of their p99s)` : ''),
      );
      ctx.log(
        `  requests/s   on ${fmt(on.rps, 0)} vs off ${fmt(off.rps, 0)} = ${fmt(comparison.rpsRatio * 100, 1)}% ` +
          passFail(comparison.rpsPass),
      );
      ctx.log(
        `  p99          on ${fmt(on.p99Ms)} ms vs off ${fmt(off.p99Ms)} ms = ${fmt(comparison.p99Ratio)}× ` +
          passFail(comparison.p99Pass),
      );
      if (on.mainCpuUs !== undefined && off.mainCpuUs !== undefined) {
        ctx.log(
          `  CPU/request  main thread on ${fmt(on.mainCpuUs, 1)} µs vs off ${fmt(off.mainCpuUs, 1)} µs; process on ` +
            `${fmt(on.processCpuUs as number, 1)} µs vs off ${fmt(off.processCpuUs as number, 1)} µs; ` +
            `${fmt(on.mirrored * 100, 1)}% of requests mirrored`,
        );
      }
      for (const n of notes) ctx.log(`note: ${n}`);

      let profile: unknown;
      if (profDir) {
        await triage.stop();
        ctx.log();
        profile = logProfile(ctx, profDir, 'Triage (shadow) main thread');
      }
      return {
        data: { goals: SHADOW_GOALS, settings, results, comparison, shadowReport: report.body, profile, notes },
        errors,
      };
    } finally {
      admin.close();
      await triage.stop();
    }
  },
};
