import type { Logger } from 'pino';
import type { Metrics } from '../platform/metrics.ts';
import { DynamicBatcher } from '../runtime/batcher.ts';
import type { ModelRuntime } from '../runtime/types.ts';
import type { CatalogModel } from '../serving/catalog.ts';
import { typicalRow } from '../serving/features.ts';
import { type Runner, type Runners, type RuntimeFactory, runtimeKey } from '../serving/runners.ts';

/** calls a remote version's batcher keeps in flight at once */
const REMOTE_CALLS_IN_FLIGHT = 8;

/** A warm version of a sync model: a dynamic batcher over its runtime. */
interface SyncRunner extends Runner {
  readonly runtime: ModelRuntime;
  /** the runtime's identity and the batching settings: a reload that changes neither keeps it */
  readonly key: string;
}

/** Whether a sync model is served, and why not. */
export interface SyncModelState {
  state: 'warm' | 'refused';
  refusal?: string;
  /** the primary version's warm-up p99 */
  warmupP99Ms?: number;
}

export interface SyncRunnerOptions {
  factory: RuntimeFactory;
  metrics: Metrics;
  logger: Logger;
  warmupRuns: number;
  warmupPolicy: 'refuse' | 'warn';
}

/**
 * The warm runners of the sync tier: every version the routing can reach (primary, canary, shadows, fallbacks) of
 * every sync model, loaded and warmed before it serves. A model whose primary's warm-up p99 breaks its budget is
 * refused (or served with a loud warning). Reloads reuse unchanged runtimes and retire the others later.
 */
export class SyncRunners implements Runners {
  readonly #o: SyncRunnerOptions;
  #runners = new Map<string, Map<string, SyncRunner>>();
  #states = new Map<string, SyncModelState>();

  constructor(options: SyncRunnerOptions) {
    this.#o = options;
  }

  get(model: CatalogModel, version: string): Runner | undefined {
    return this.#runners.get(model.name)?.get(version);
  }

  has(model: string, version: string): boolean {
    return this.#runners.get(model)?.has(version) ?? false;
  }

  state(model: string): SyncModelState | undefined {
    return this.#states.get(model);
  }

  versions(model: string): string[] {
    return [...(this.#runners.get(model)?.keys() ?? [])];
  }

  /** Loads and warms the sync models of `models` (reusing unchanged runtimes), then swaps them in. */
  async prepare(models: readonly CatalogModel[]): Promise<void> {
    const reuse = new Map<string, SyncRunner>();
    for (const versions of this.#runners.values()) for (const r of versions.values()) reuse.set(r.key, r);
    const runners = new Map<string, Map<string, SyncRunner>>();
    const states = new Map<string, SyncModelState>();
    for (const model of models) {
      if (model.tier !== 'sync' || !model.manifest.sync) continue;
      const versions = new Map<string, SyncRunner>();
      for (const spec of model.manifest.versions) versions.set(spec.version, await this.#load(model, spec, reuse));
      runners.set(model.name, versions);
      states.set(model.name, this.#verdict(model, versions.get(model.version)));
    }
    const kept = new Set<string>();
    for (const versions of runners.values()) for (const r of versions.values()) kept.add(r.key);
    const retired = [...reuse.values()].filter((r) => !kept.has(r.key));
    this.#runners = runners;
    this.#states = states;
    if (retired.length > 0) {
      // requests in flight hold the old runners: close them once those have long finished
      const closeLater = setTimeout(() => void Promise.allSettled(retired.map((r) => r.runtime.close())), 30_000);
      closeLater.unref();
    }
  }

  #verdict(model: CatalogModel, primary: SyncRunner | undefined): SyncModelState {
    const { logger, metrics, warmupPolicy } = this.#o;
    const p99 = primary?.warmupP99Ms;
    const budget = model.manifest.sync?.latencyBudgetMs ?? 0;
    const context = { model: model.name, version: model.version };
    if (p99 !== undefined && p99 > budget) {
      const reason = `warm-up p99 ${p99.toFixed(2)} ms breaks the latency budget of ${budget} ms`;
      if (warmupPolicy === 'refuse') {
        metrics.modelRefused.set({ model: model.name, reason: 'warmup_over_budget' }, 1);
        logger.error(context, `model refused: ${reason}`);
        return { state: 'refused', refusal: reason, warmupP99Ms: p99 };
      }
      logger.warn(context, `serving anyway: ${reason}`);
    }
    logger.info({ ...context, p99Ms: p99?.toFixed(3) }, 'model warm');
    return { state: 'warm', ...(p99 !== undefined ? { warmupP99Ms: p99 } : {}) };
  }

  async #load(
    model: CatalogModel,
    spec: CatalogModel['manifest']['versions'][number],
    reuse: Map<string, SyncRunner>,
  ): Promise<SyncRunner> {
    const sync = model.manifest.sync as NonNullable<CatalogModel['manifest']['sync']>;
    const key = `${runtimeKey(model.loaded, spec)}:${JSON.stringify(sync)}`;
    const existing = reuse.get(key);
    if (existing) return existing;
    const { metrics } = this.#o;
    const runtime = await this.#o.factory(model.loaded, spec);
    const remote = spec.runtime.kind !== 'onnx';
    const labels = { model: model.name, version: spec.version };
    // a remote endpoint gets no warm-up call; its concurrent requests share calls too, a few calls in flight at once
    const warmupP99Ms = remote ? undefined : await measureWarmup(runtime, typicalRow(model.manifest.features), this.#o);
    if (warmupP99Ms !== undefined) metrics.warmupLatency.set(labels, warmupP99Ms / 1000);
    const batcher = new DynamicBatcher(runtime, {
      featureCount: model.manifest.features.length,
      maxRows: sync.maxBatchSize,
      maxWaitMs: sync.maxBatchWaitMs,
      ...(remote ? { maxConcurrentRuns: REMOTE_CALLS_IN_FLIGHT } : {}),
      observer: {
        onRun(rows, seconds, ok) {
          metrics.inferenceDuration.observe({ ...labels, tier: 'sync', status: ok ? 'ok' : 'error' }, seconds);
          metrics.inferenceBatchSize.observe(labels, rows);
        },
      },
    });
    return {
      spec,
      runtime,
      key,
      ...(warmupP99Ms !== undefined ? { warmupP99Ms } : {}),
      submit: (input, rows, deadlineAt) => batcher.submit(input, rows, deadlineAt),
      expectedWaitMs: (rows) => batcher.expectedWaitMs(rows),
    };
  }

  async close(): Promise<void> {
    const all = [...this.#runners.values()].flatMap((v) => [...v.values()]);
    this.#runners.clear();
    await Promise.allSettled(all.map((r) => r.runtime.close()));
  }
}

async function measureWarmup(runtime: ModelRuntime, row: Float32Array, o: { warmupRuns: number }): Promise<number> {
  await runtime.run(row, 1); // the first run pays for lazy allocations: not part of the steady state
  const samples: number[] = [];
  for (let i = 0; i < o.warmupRuns; i++) {
    const t = performance.now();
    await runtime.run(row, 1);
    samples.push(performance.now() - t);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.min(samples.length - 1, Math.ceil(samples.length * 0.99) - 1)] as number;
}
