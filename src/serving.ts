import type { Logger } from 'pino';
import { Problem } from './errors.ts';
import { encodeInstances, typicalRow } from './features.ts';
import type { Metrics } from './metrics.ts';
import { inputWidth } from './model-input.ts';
import { type CorpusEntry, type Prediction, shapePredictions } from './predictions.ts';
import type { LoadedModel } from './registry/load.ts';
import type { Manifest, ModelVersion, Tier } from './registry/schema.ts';
import { BatchCancelled, DynamicBatcher } from './runtime/batcher.ts';
import { createOnnxRuntime } from './runtime/onnx.ts';
import type { ModelRuntime } from './runtime/types.ts';

export type RuntimeFactory = (model: LoadedModel, version: ModelVersion) => Promise<ModelRuntime>;

export function onnxRuntimeFactory(threads: number): RuntimeFactory {
  return (model, version) =>
    createOnnxRuntime(model.artifacts.get(version.version) as string, inputWidth(model.manifest), { threads });
}

export type ModelState = 'warm' | 'refused';

export interface ServedModel {
  readonly manifest: Manifest;
  readonly tier: Tier;
  readonly tierReasons: string[];
  readonly version: string;
  readonly corpus?: CorpusEntry[];
  state: ModelState;
  refusal?: string;
  warmupP99Ms?: number;
  inFlight: number;
  batcher?: DynamicBatcher;
  runtime?: ModelRuntime;
}

export interface PredictResult {
  model: ServedModel;
  predictions: Prediction[];
}

export const NO_SCORE_ACTION = 'no score: follow the standard protocol';

/**
 * The models this process serves: sync models loaded into their runtime and warmed at start, with a concurrency
 * bound and a deadline per request. Requests past the bound are refused at once (503) instead of queueing until the
 * budget is blown; requests past their deadline get no score (504), never a late one.
 */
export class ModelService {
  readonly #models = new Map<string, ServedModel>();
  readonly #metrics: Metrics;

  private constructor(metrics: Metrics) {
    this.#metrics = metrics;
  }

  static async start(
    loaded: LoadedModel[],
    options: {
      metrics: Metrics;
      logger: Logger;
      runtimeFactory: RuntimeFactory;
      warmupRuns: number;
      warmupPolicy: 'refuse' | 'warn';
    },
  ): Promise<ModelService> {
    const service = new ModelService(options.metrics);
    const { metrics, logger } = options;
    for (const m of loaded) {
      const served: ServedModel = {
        manifest: m.manifest,
        tier: m.classification.tier,
        tierReasons: m.classification.reasons,
        version: m.primary.version,
        ...(m.corpus ? { corpus: m.corpus } : {}),
        state: 'warm',
        inFlight: 0,
      };
      service.#models.set(m.manifest.name, served);
      const sync = m.manifest.sync;
      if (served.tier !== 'sync' || !sync) continue;

      const runtime = await options.runtimeFactory(m, m.primary);
      const p99 = await measureWarmup(runtime, typicalRow(m.manifest.features), options.warmupRuns);
      served.runtime = runtime;
      served.warmupP99Ms = p99;
      metrics.warmupLatency.set({ model: m.manifest.name, version: served.version }, p99 / 1000);
      if (p99 > sync.latencyBudgetMs) {
        const reason = `warm-up p99 ${p99.toFixed(2)} ms breaks the latency budget of ${sync.latencyBudgetMs} ms`;
        if (options.warmupPolicy === 'refuse') {
          served.state = 'refused';
          served.refusal = reason;
          metrics.modelRefused.set({ model: m.manifest.name, reason: 'warmup_over_budget' }, 1);
          logger.error({ model: m.manifest.name, version: served.version, p99Ms: p99 }, `model refused: ${reason}`);
          continue;
        }
        logger.warn({ model: m.manifest.name, version: served.version, p99Ms: p99 }, `serving anyway: ${reason}`);
      }
      const labels = { model: m.manifest.name, version: served.version };
      served.batcher = new DynamicBatcher(runtime, {
        featureCount: m.manifest.features.length,
        maxRows: sync.maxBatchSize,
        maxWaitMs: sync.maxBatchWaitMs,
        observer: {
          onRun(rows, seconds, ok) {
            metrics.inferenceDuration.observe({ ...labels, tier: 'sync', status: ok ? 'ok' : 'error' }, seconds);
            metrics.inferenceBatchSize.observe(labels, rows);
          },
        },
      });
      logger.info({ model: m.manifest.name, version: served.version, p99Ms: Number(p99.toFixed(3)) }, 'model warm');
    }
    return service;
  }

  get(name: string): ServedModel | undefined {
    return this.#models.get(name);
  }

  list(): ServedModel[] {
    return [...this.#models.values()];
  }

  /** Ready when every model that is not refused is warm. */
  ready(): boolean {
    return this.list().every((m) => m.state === 'refused' || m.tier !== 'sync' || m.batcher !== undefined);
  }

  /**
   * Scores a sync request. `instances` is validated first (bad input costs no capacity), then admitted against the
   * concurrency bound, then raced against `deadlineMs`.
   */
  async predict(model: ServedModel, instances: readonly unknown[], deadlineMs: number): Promise<Prediction[]> {
    const sync = model.manifest.sync;
    if (model.state === 'refused' || !model.batcher || !sync) {
      throw new Problem(
        'not_ready',
        `model "${model.manifest.name}" is not being served: ${model.refusal ?? 'not loaded'}`,
        {
          headers: { 'retry-after': '30' },
        },
      );
    }
    const input = encodeInstances(model.manifest.features, instances);
    const name = model.manifest.name;
    if (model.inFlight >= sync.maxConcurrency) {
      this.#metrics.shed.inc({ model: name });
      throw new Problem('overloaded', `model "${name}" is at its concurrency bound (${sync.maxConcurrency})`, {
        headers: { 'retry-after': '1' },
      });
    }
    model.inFlight++;
    this.#metrics.inFlight.inc({ model: name });
    const submission = model.batcher.submit(input, instances.length);
    // the slot is held until the runtime is done with the work (or it is withdrawn), whatever the caller saw
    const release = () => {
      model.inFlight--;
      this.#metrics.inFlight.dec({ model: name });
    };
    submission.result.then(release, release);

    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        submission.cancel();
        this.#metrics.deadlineExceeded.inc({ model: name });
        reject(
          new Problem('deadline_exceeded', `no score within ${deadlineMs} ms`, {
            extensions: { action: NO_SCORE_ACTION, deadlineMs },
          }),
        );
      }, deadlineMs);
    });
    try {
      const outputs = await Promise.race([submission.result, deadline]);
      return shapePredictions(model.manifest.output, outputs, instances.length);
    } catch (err) {
      if (err instanceof Problem) throw err;
      if (err instanceof BatchCancelled)
        throw new Problem('deadline_exceeded', 'no score within the deadline', {
          extensions: { action: NO_SCORE_ACTION },
        });
      throw new Problem('inference_failed', 'the model failed to score this request', {
        extensions: { action: NO_SCORE_ACTION },
        cause: err,
      });
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.list().map((m) => m.runtime?.close()));
  }
}

async function measureWarmup(runtime: ModelRuntime, row: Float32Array, runs: number): Promise<number> {
  await runtime.run(row, 1); // the first run pays for lazy allocations: not part of the steady state
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = performance.now();
    await runtime.run(row, 1);
    samples.push(performance.now() - t);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.min(samples.length - 1, Math.ceil(samples.length * 0.99) - 1)] as number;
}
