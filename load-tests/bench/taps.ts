import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Redis } from 'ioredis';
import { MonitoringRecorder } from '../../src/monitoring/recorder.ts';
import { PredictionLog } from '../../src/outcomes/prediction-log.ts';
import { KeySpace } from '../../src/platform/keyspace.ts';
import { loadModels } from '../../src/registry/load.ts';
import { ModelCatalog } from '../../src/serving/catalog.ts';
import type { ScoreObserver } from '../../src/serving/scorer.ts';
import type { BenchContext, Section, SectionResult } from './context.ts';

/**
 * What the accountability taps cost each scoring, measured directly (the sync section's monitoring on/off pair is
 * end to end, and on a busy machine its noise can exceed the difference): µs per call on the caller's path, µs per
 * row at flush (off the path, same event loop), and the longest event-loop block a flush of one busy second causes.
 */
export const tapsSection: Section = {
  name: 'taps',
  description: 'monitoring and prediction-log taps: cost per scoring on the path and at flush',
  async run(ctx: BenchContext): Promise<SectionResult> {
    const redis = new Redis(ctx.redisUrl ?? 'redis://127.0.0.1:6379');
    const keys = new KeySpace(`{triage-bench-taps-${process.pid}}`);
    const calls = Number(process.env.BENCH_TAP_CALLS ?? 100_000);
    const model = ModelCatalog.fixed(await loadModels(ctx.modelsDir, 5000)).get('deterioration');
    if (!model) throw new Error('the deterioration model is needed');
    const data = Float32Array.from([70, 18, 96, 120, 80, 37, 0]);
    const result = {
      version: '1',
      predictions: [{ deteriorationRisk: 0.12, verdict: 'no-escalation', aboveThreshold: false }],
    };
    const taps: Array<[string, ScoreObserver & { flush(): Promise<void>; close(): Promise<void> }]> = [
      ['monitoring', new MonitoringRecorder({ redis, keys, flushEveryMs: 0 })],
      ['prediction log', new PredictionLog({ redis, keys, flushEveryMs: 0 })],
    ];
    const data_: Record<string, unknown> = {};
    try {
      for (const [name, tap] of taps) {
        const feed = (round: number) => {
          for (let i = 0; i < calls; i++) {
            tap.onScore({
              model,
              tier: 'sync',
              input: { data, rows: 1, assumedRows: 0, refs: [`request:${round}-${i}#0`] },
              result,
              ms: 0.3,
            });
          }
        };
        feed(0); // warm-up
        await tap.flush();
        const t0 = performance.now();
        feed(1);
        const t1 = performance.now();
        const loop = monitorEventLoopDelay({ resolution: 1 });
        loop.enable();
        await tap.flush();
        loop.disable();
        const t2 = performance.now();
        const row = {
          pathUsPerCall: ((t1 - t0) / calls) * 1000,
          flushUsPerCall: ((t2 - t1) / calls) * 1000,
          longestBlockMs: loop.max / 1e6,
        };
        data_[name] = row;
        ctx.log(
          `  ${name.padEnd(15)} ${row.pathUsPerCall.toFixed(2)} µs/call on the path, ${row.flushUsPerCall.toFixed(2)} µs/call at flush, ` +
            `longest event-loop block during a flush of ${calls} calls ${row.longestBlockMs.toFixed(1)} ms`,
        );
        await tap.close();
      }
    } finally {
      // the global tag's keys and the model shard's (KeySpace.patterns)
      const written = (await Promise.all(keys.patterns().map((p) => redis.keys(p)))).flat();
      if (written.length > 0) await redis.del(...written);
      redis.disconnect();
    }
    return { data: data_, errors: [] };
  },
};
