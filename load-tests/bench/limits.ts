/**
 * What the per-client limiter costs the sync predict hot path: the same gateway with every limit off, then with
 * limits on (high enough never to refuse), in alternating rounds, under the same load. Also the limiter step alone.
 *
 *   node --import tsx src/devtools/with-redis.ts node --import tsx load-tests/bench/limits.ts
 *
 * env: BENCH_ROUNDS (3), BENCH_DURATION (s per run, 5), BENCH_CONNECTIONS (32), BENCH_LOADGEN (wrk | autocannon)
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import type { Principal } from '../../src/platform/auth.ts';
import { RateLimiter } from '../../src/platform/rate-limit.ts';
import { Children } from './children.ts';
import type { BenchContext } from './context.ts';
import { pickLoadGenerator } from './load.ts';
import { startTriage } from './triage.ts';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const num = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const rounds = num('BENCH_ROUNDS', 3);
const durationSec = num('BENCH_DURATION', 5);
const connections = num('BENCH_CONNECTIONS', 32);
const redisUrl = process.env.TRIAGE_REDIS_URL;

const children = new Children();
const ctx: BenchContext = {
  repoRoot,
  modelsDir: path.join(repoRoot, 'models'),
  resultsDir: path.join(repoRoot, 'bench-results'),
  redisUrl,
  settings: { durationSec, warmupSec: 1, connections, accessLogVariant: false, cpuProfile: false },
  children,
  load: pickLoadGenerator(children, repoRoot, process.env.BENCH_LOADGEN),
  log: (line = '') => console.log(line),
};

// 1. the limiter step alone (what requireRole adds per predict)
const redis = new Redis(redisUrl ?? 'redis://127.0.0.1:6379', { lazyConnect: true });
const limiter = new RateLimiter({
  redis,
  prefix: '{bench-limits}',
  settings: {
    classes: { predict: { limit: 1_000_000, windowSeconds: 1 }, submit: null, default: null },
    authFailures: null,
    trustedProxies: [],
  },
});
const principal = { id: 'bench', role: 'client', models: new Set(['*']), callbackHosts: [] } as Principal;
const steps = 2_000_000;
let t0 = process.hrtime.bigint();
for (let i = 0; i < steps; i++) limiter.take(principal, 'predict');
const nsPerStep = Number(process.hrtime.bigint() - t0) / steps;
console.log(`limiter step (predict, per replica): ${nsPerStep.toFixed(0)} ns per request`);
redis.disconnect();

// 2. end to end: predict throughput and latency, limits off vs on
const OFF = { TRIAGE_RATE_LIMIT_PREDICT: 'off', TRIAGE_RATE_LIMIT_SUBMIT: 'off', TRIAGE_RATE_LIMIT_DEFAULT: 'off' };
const body = JSON.stringify({
  instances: [
    {
      respirationRate: 22,
      spo2: 93,
      onOxygen: true,
      systolicBP: 105,
      pulse: 115,
      consciousness: 'alert',
      temperature: 38.5,
    },
  ],
});
const results: Record<string, Array<{ rps: number; p99Ms: number; non2xx: number }>> = { off: [], on: [] };
try {
  for (let round = 0; round < rounds; round++) {
    for (const arm of round % 2 === 0 ? (['off', 'on'] as const) : (['on', 'off'] as const)) {
      // startTriage sets never-refusing limits; `off` overrides them
      const triage = await startTriage(ctx, {
        name: `limits ${arm}`,
        logLevel: 'warn',
        accessLog: false,
        ...(arm === 'off' ? { env: OFF } : {}),
      });
      const spec = {
        url: `${triage.url}/v1/models/news2/predict`,
        headers: { 'content-type': 'application/json', authorization: `Bearer ${triage.clientKey}` },
        body,
        connections,
      };
      t0 = process.hrtime.bigint();
      await ctx.load.run({ ...spec, name: 'warm-up', durationSec: 1 });
      const r = await ctx.load.run({ ...spec, name: arm, durationSec });
      results[arm]?.push({ rps: r.rps, p99Ms: r.p99Ms, non2xx: r.non2xx });
      console.log(
        `round ${round + 1} limits ${arm}: ${r.rps.toFixed(0)} rps, p99 ${r.p99Ms.toFixed(2)} ms, non-2xx ${r.non2xx}`,
      );
      await triage.stop();
    }
  }
} finally {
  ctx.load.close();
  await children.stopAll();
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
for (const arm of ['off', 'on'] as const) {
  const rs = results[arm] ?? [];
  console.log(
    `limits ${arm}: median ${median(rs.map((r) => r.rps)).toFixed(0)} rps, median p99 ${median(rs.map((r) => r.p99Ms)).toFixed(2)} ms`,
  );
}
