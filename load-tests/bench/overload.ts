import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { envNumber, fmt, passFail, runJsonChild, type summarize } from './common.ts';
import type { BenchContext, Section, SectionResult } from './context.ts';
import { NEWS2_INSTANCE } from './sync.ts';
import { type PromSample, promSum, startTriage, type TriageProcess } from './triage.ts';

/** The issue's promises under overload (the same as load-tests/k6/overload.js's thresholds). */
export const OVERLOAD_GOALS = {
  /** p99 of the requests the gateway accepted (200), at the peak */
  maxAcceptedP99Ms: 200,
  /** every 504 leaves by its deadline plus this much (measured by the gateway, from the request's arrival) */
  maxOverrunMs: 10,
  /** 503s that tell the caller when to come back */
  minRetryAfterShare: 0.999,
  /** once the load drops, answers are normal again */
  minRecoveredShare: 0.99,
};

interface OpenLoopResult {
  rate: number;
  seconds: number;
  rampSeconds?: number;
  sent: number;
  dropped: number;
  socketErrors: number;
  retryAfter503: number;
  byStatus: Record<string, ReturnType<typeof summarize>>;
  latencies504: number[];
  /** connections the client opened */
  connections: number;
  /** the client's own CPU time over the phase (ms): it shares the machine with the gateway */
  clientCpuMs: number;
  /** per second: sent, 200s, 503s, 504s, the slowest answer (ms) */
  timeline: Array<[number, number, number, number, number]>;
}

function openLoop(
  ctx: BenchContext,
  name: string,
  triage: TriageProcess,
  rate: number,
  seconds: number,
  ramp?: { from: number; seconds: number },
) {
  return runJsonChild<OpenLoopResult>(
    ctx.children,
    `open loop ${name}`,
    path.join(ctx.repoRoot, 'load-tests', 'bench', 'open-loop.ts'),
    {
      OPEN_URL: `${triage.url}/v1/models/news2/predict`,
      OPEN_HEADERS: JSON.stringify({ 'content-type': 'application/json', authorization: `Bearer ${triage.clientKey}` }),
      OPEN_BODY: JSON.stringify({ instances: [NEWS2_INSTANCE] }),
      OPEN_RATE: String(Math.max(1, Math.round(rate))),
      OPEN_SECONDS: String(seconds),
      OPEN_MAX_IN_FLIGHT: String(envNumber('BENCH_OVERLOAD_MAX_IN_FLIGHT', 1500, 1)),
      ...(ramp ? { OPEN_RAMP_FROM: String(Math.round(ramp.from)), OPEN_RAMP_SECONDS: String(ramp.seconds) } : {}),
    },
    { cwd: ctx.repoRoot, marker: 'OPEN_LOOP_JSON', timeoutMs: (seconds + (ramp?.seconds ?? 0) + 60) * 1000 },
  );
}

const count = (r: OpenLoopResult, status: number) => r.byStatus[String(status)]?.n ?? 0;
/** answers other than 200, 503 and 504 (an error the thresholds do not allow) */
const unexpectedOf = (r: OpenLoopResult) => r.sent - r.socketErrors - count(r, 200) - count(r, 503) - count(r, 504);

/** The gateway's own 504 lateness histogram: how many 504s left within `withinMs` of their deadline, of how many. */
function overrunWithin(samples: PromSample[], withinMs: number) {
  const total = promSum(samples, 'triage_deadline_overrun_seconds_count', { model: 'news2' });
  const within = promSum(samples, 'triage_deadline_overrun_seconds_bucket', {
    model: 'news2',
    le: String(withinMs / 1000),
  });
  return { total, within };
}

/**
 * Overload, open loop (k6's overload.js where k6 is not installed): Triage's closed-loop capacity is measured first
 * with wrk; then requests arrive at half of it (the baseline, same run), at BENCH_OVERLOAD_FACTOR times it (the peak,
 * reached by a linear climb from the baseline's rate over BENCH_OVERLOAD_RAMP seconds, as overload.js climbs),
 * and at a trickle (recovery). At the peak the gateway must shed with 503 + Retry-After rather than queue, keep the
 * p99 of what it accepts bounded, and send every 504 by its deadline + 10 ms.
 */
export const overloadSection: Section = {
  name: 'overload',
  description: 'overload: open-loop arrivals past capacity; shedding, accepted p99, 504 lateness, recovery',
  async run(ctx: BenchContext): Promise<SectionResult> {
    const errors: string[] = [];
    const seconds = envNumber('BENCH_OVERLOAD_DURATION', Math.max(5, ctx.settings.durationSec), 1);
    const factor = envNumber('BENCH_OVERLOAD_FACTOR', 2, 1);
    const manifest = parse(readFileSync(path.join(ctx.modelsDir, 'news2', 'model.yaml'), 'utf8')) as {
      sync: { latencyBudgetMs: number; maxConcurrency: number };
    };
    const deadlineMs = manifest.sync.latencyBudgetMs;
    const triage = await startTriage(ctx, { name: 'triage (overload)', logLevel: 'warn', accessLog: false });
    try {
      const headers = { 'content-type': 'application/json', authorization: `Bearer ${triage.clientKey}` };
      const body = JSON.stringify({ instances: [NEWS2_INSTANCE] });
      const url = `${triage.url}/v1/models/news2/predict`;
      await ctx.load.run({ name: 'overload warm-up', url, headers, body, connections: 32, durationSec: 2 });
      const capacity = await ctx.load.run({
        name: 'overload capacity',
        url,
        headers,
        body,
        connections: ctx.settings.connections,
        durationSec: Math.min(5, seconds),
      });
      ctx.log(
        `capacity (wrk, ${ctx.settings.connections} connections, closed loop): ${fmt(capacity.rps, 0)} rps; news2 deadline ${deadlineMs} ms, maxConcurrency ${manifest.sync.maxConcurrency}`,
      );
      const baseline = await openLoop(ctx, 'baseline', triage, capacity.rps / 2, seconds);
      const before = await triage.scrape();
      // the climb from the baseline to the peak, as overload.js's ramping-arrival-rate (its RAMP, 30 s by default):
      // an instant jump from nothing to twice capacity over fresh connections measures the first second's pile-up
      const rampSeconds = envNumber('BENCH_OVERLOAD_RAMP', 5, 0);
      const peak = await openLoop(ctx, 'peak', triage, capacity.rps * factor, seconds, {
        from: capacity.rps / 2,
        seconds: rampSeconds,
      });
      const after = await triage.scrape();
      await new Promise((r) => setTimeout(r, 2000));
      const recovery = await openLoop(ctx, 'recovery', triage, 20, Math.min(5, seconds));

      const delta = (name: string, labels: Record<string, string>) =>
        promSum(after, name, labels) - promSum(before, name, labels);
      const shedConcurrency = delta('triage_shed_total', { model: 'news2', reason: 'concurrency' });
      const shedQueueDelay = delta('triage_shed_total', { model: 'news2', reason: 'queue_delay' });
      // refused before the app while the event loop was saturated (src/sync/admission-gate.ts)
      const shedEventLoop = delta('triage_shed_total', { model: 'news2', reason: 'event_loop' });
      const overrunAfter = overrunWithin(after, OVERLOAD_GOALS.maxOverrunMs);
      const overrunBefore = overrunWithin(before, OVERLOAD_GOALS.maxOverrunMs);
      const server504 = overrunAfter.total - overrunBefore.total;
      const server504OnTime = overrunAfter.within - overrunBefore.within;

      const describe = (label: string, r: OpenLoopResult) => {
        const ok = r.byStatus['200'];
        ctx.log(
          `  ${label.padEnd(9)} offered ${fmt(r.rate, 0)}/s for ${r.seconds} s${r.rampSeconds ? ` after a ${r.rampSeconds} s climb` : ''}: sent ${r.sent}, dropped by the client ${r.dropped}, ` +
            `200 ${count(r, 200)} (p50 ${fmt(ok?.p50)} ms, p99 ${fmt(ok?.p99)} ms), 503 ${count(r, 503)}, 504 ${count(r, 504)}, ` +
            `other ${unexpectedOf(r)}, socket errors ${r.socketErrors}; client: ${r.connections} connections, ${fmt(r.clientCpuMs, 0)} ms CPU`,
        );
      };
      describe('baseline', baseline);
      describe('peak', peak);
      describe('recovery', recovery);
      ctx.log(`  peak by second (sent/200/503/504/slowest ms): ${peak.timeline.map((s) => s.join('/')).join('  ')}`);

      const acceptedP99 = peak.byStatus['200']?.p99 ?? Number.NaN;
      const shed = count(peak, 503);
      const retryAfterShare = shed > 0 ? peak.retryAfter503 / shed : 1;
      const client504Late = peak.latencies504.map((ms) => ms - deadlineMs).sort((a, b) => a - b);
      const recoveredShare = recovery.sent > 0 ? count(recovery, 200) / recovery.sent : 0;
      const checks = {
        overloaded: shed > 0,
        acceptedP99: acceptedP99 <= OVERLOAD_GOALS.maxAcceptedP99Ms,
        retryAfter: retryAfterShare >= OVERLOAD_GOALS.minRetryAfterShare,
        deadlineOnTime: server504 === server504OnTime,
        recovered: recoveredShare >= OVERLOAD_GOALS.minRecoveredShare,
      };
      ctx.log(
        `  shed at the peak (gateway): event_loop ${shedEventLoop}, concurrency ${shedConcurrency}, queue_delay ${shedQueueDelay}; ` +
          `503 with Retry-After ${fmt(retryAfterShare * 100, 2)}%`,
      );
      ctx.log('goals (issue #11, as load-tests/k6/overload.js):');
      ctx.log(`  it was overloaded (503s at the peak)                  ${passFail(checks.overloaded)}`);
      ctx.log(
        `  accepted p99 at the peak ${fmt(acceptedP99)} ms ≤ ${OVERLOAD_GOALS.maxAcceptedP99Ms} ms (baseline at half capacity: ${fmt(baseline.byStatus['200']?.p99)} ms)  ${passFail(checks.acceptedP99)}`,
      );
      ctx.log(
        `  every 504 by deadline + ${OVERLOAD_GOALS.maxOverrunMs} ms (gateway's histogram): ${server504OnTime} of ${server504}  ${passFail(checks.deadlineOnTime)}` +
          (client504Late.length > 0
            ? `  (seen by the client, including the kernel's queues: max ${fmt(client504Late.at(-1))} ms late)`
            : ''),
      );
      ctx.log(`  503s carry Retry-After: ${fmt(retryAfterShare * 100, 2)}%  ${passFail(checks.retryAfter)}`);
      ctx.log(`  recovery: ${fmt(recoveredShare * 100, 1)}% answered 200  ${passFail(checks.recovered)}`);
      for (const [label, r] of [
        ['baseline', baseline],
        ['peak', peak],
        ['recovery', recovery],
      ] as const) {
        const unexpected = unexpectedOf(r);
        if (unexpected > 0 || r.socketErrors > 0) {
          errors.push(`overload ${label}: ${unexpected} unexpected statuses, ${r.socketErrors} socket errors`);
        }
      }
      const { latencies504: _b, ...baselineData } = baseline;
      const { latencies504: _p, ...peakData } = peak;
      const { latencies504: _r, ...recoveryData } = recovery;
      return {
        data: {
          goals: OVERLOAD_GOALS,
          deadlineMs,
          capacityRps: capacity.rps,
          factor,
          baseline: baselineData,
          peak: { ...peakData, client504LateMs: client504Late.length ? client504Late.at(-1) : undefined },
          recovery: recoveryData,
          gateway: { shedEventLoop, shedConcurrency, shedQueueDelay, server504, server504OnTime },
          checks,
        },
        errors,
      };
    } finally {
      await triage.stop();
    }
  },
};
