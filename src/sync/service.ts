import type { Logger } from 'pino';
import { Problem } from '../platform/errors.ts';
import { labelled, type Metrics } from '../platform/metrics.ts';
import type { LoadedModel } from '../registry/load.ts';
import type { Manifest, ModelVersion, Tier } from '../registry/schema.ts';
import { BatchCancelled, DynamicBatcher } from '../runtime/batcher.ts';
import { createOnnxRuntime } from '../runtime/onnx.ts';
import type { ModelRuntime, OutputTensor } from '../runtime/types.ts';
import { encodeInstances, typicalRow } from '../serving/features.ts';
import { inputWidth } from '../serving/inputs.ts';
import { type CorpusEntry, type Prediction, shapePredictions } from '../serving/predictions.ts';
import { chooseVersion, type RoutingState, routingFromManifest } from '../serving/routing.ts';
import { comparable, type ShadowRecorder } from '../serving/shadow.ts';

export type RuntimeFactory = (model: LoadedModel, version: ModelVersion) => Promise<ModelRuntime>;

export function onnxRuntimeFactory(threads: number): RuntimeFactory {
  return (model, version) =>
    createOnnxRuntime(model.artifacts.get(version.version) as string, inputWidth(model.manifest), { threads });
}

export type ModelState = 'warm' | 'refused';

/** One version of a model, ready to score: its runtime, and for in-process versions a dynamic batcher. */
export interface ServedVersion {
  readonly spec: ModelVersion;
  readonly runtime: ModelRuntime;
  readonly batcher?: DynamicBatcher;
  /** the runtime's identity, so a reload reuses an unchanged runtime */
  readonly key: string;
  warmupP99Ms?: number;
}

export interface ServedModel {
  readonly manifest: Manifest;
  readonly tier: Tier;
  readonly tierReasons: string[];
  /** the primary version: `routing.primary` (it changes on promotion or rollback) */
  readonly version: string;
  routing: RoutingState;
  readonly corpus?: CorpusEntry[];
  readonly loaded: LoadedModel;
  state: ModelState;
  refusal?: string;
  /** the primary version's warm-up p99 */
  readonly warmupP99Ms?: number;
  /**
   * requests admitted and not finished, all versions together: the concurrency bound counts these. One count per
   * model name, shared by the objects a reload swaps, so requests that started before a swap are counted (and
   * released) in the same total as those after it.
   */
  inFlight: number;
  versions: Map<string, ServedVersion>;
}

export interface PredictResult {
  predictions: Prediction[];
  /** the version that answered */
  version: string;
  /** set when a declared fallback answered because the routed version failed */
  fallback?: { from: string; reason: string };
}

export const NO_SCORE_ACTION = 'no score: follow the standard protocol';
/** Shadow runs in flight per model beyond which sampled mirrors are dropped (and counted), never queued. */
const MAX_SHADOW_IN_FLIGHT = 256;
/** calls a remote version's batcher keeps in flight at once */
const REMOTE_CALLS_IN_FLIGHT = 8;

interface ServiceOptions {
  metrics: Metrics;
  logger: Logger;
  runtimeFactory: RuntimeFactory;
  warmupRuns: number;
  warmupPolicy: 'refuse' | 'warn';
  shadow?: ShadowRecorder;
  random?: () => number;
}

/**
 * The models this process serves. Sync models are loaded into their runtimes (every version the routing can reach:
 * primary, canary, shadows, fallbacks) and warmed at start, with a concurrency bound and a deadline per request:
 * requests past the bound are refused at once (503), requests past their deadline get no score (504), never a late
 * one. A canary split picks the answering version per subject; shadows score sampled inputs after the answer, off
 * the request's path. Manifests reload without a restart: requests in flight finish on the versions they started on.
 */
export class ModelService {
  #models = new Map<string, ServedModel>();
  readonly #options: ServiceOptions;
  readonly #random: () => number;
  #shadowInFlight = new Map<string, number>();
  /** the in-flight count of each model by name, kept across reloads (see ServedModel.inFlight) */
  #inFlight = new Map<string, { n: number }>();

  readonly #inFlightGauge;
  readonly #routedRequests;

  private constructor(options: ServiceOptions) {
    this.#options = options;
    this.#inFlightGauge = labelled(options.metrics.inFlight);
    this.#routedRequests = labelled(options.metrics.canaryRequests);
    this.#random = options.random ?? Math.random;
  }

  static async start(loaded: LoadedModel[], options: ServiceOptions): Promise<ModelService> {
    const service = new ModelService(options);
    service.#models = await service.#build(loaded, new Map());
    return service;
  }

  async #build(loaded: LoadedModel[], reuse: Map<string, ServedVersion>): Promise<Map<string, ServedModel>> {
    const models = new Map<string, ServedModel>();
    for (const m of loaded) {
      const served: ServedModel = {
        manifest: m.manifest,
        tier: m.classification.tier,
        tierReasons: m.classification.reasons,
        routing: routingFromManifest(m.manifest),
        get version() {
          return this.routing.primary;
        },
        get warmupP99Ms() {
          return this.versions.get(this.routing.primary)?.warmupP99Ms;
        },
        ...(m.corpus ? { corpus: m.corpus } : {}),
        loaded: m,
        state: 'warm',
        inFlight: 0,
        versions: new Map(),
      };
      const counter = this.#inFlight.get(m.manifest.name) ?? { n: 0 };
      this.#inFlight.set(m.manifest.name, counter);
      Object.defineProperty(served, 'inFlight', {
        enumerable: true,
        get: () => counter.n,
        set: (n: number) => {
          counter.n = n;
        },
      });
      models.set(m.manifest.name, served);
      if (served.tier !== 'sync' || !m.manifest.sync) continue;
      for (const v of m.manifest.versions) {
        const version = await this.#loadVersion(m, v, reuse);
        served.versions.set(v.version, version);
      }
      const primary = served.versions.get(served.version);
      const budget = m.manifest.sync.latencyBudgetMs;
      if (primary?.warmupP99Ms !== undefined && primary.warmupP99Ms > budget) {
        const reason = `warm-up p99 ${primary.warmupP99Ms.toFixed(2)} ms breaks the latency budget of ${budget} ms`;
        if (this.#options.warmupPolicy === 'refuse') {
          served.state = 'refused';
          served.refusal = reason;
          this.#options.metrics.modelRefused.set({ model: m.manifest.name, reason: 'warmup_over_budget' }, 1);
          this.#options.logger.error({ model: m.manifest.name, version: served.version }, `model refused: ${reason}`);
          continue;
        }
        this.#options.logger.warn({ model: m.manifest.name, version: served.version }, `serving anyway: ${reason}`);
      }
      this.#options.logger.info(
        { model: m.manifest.name, version: served.version, p99Ms: primary?.warmupP99Ms?.toFixed(3) },
        'model warm',
      );
    }
    return models;
  }

  async #loadVersion(m: LoadedModel, v: ModelVersion, reuse: Map<string, ServedVersion>): Promise<ServedVersion> {
    const { metrics } = this.#options;
    const key = `${m.manifest.name}@${v.version}:${JSON.stringify(v.runtime)}:${JSON.stringify(m.manifest.sync)}`;
    const existing = reuse.get(key);
    if (existing) return existing;
    const runtime = await this.#options.runtimeFactory(m, v);
    const sync = m.manifest.sync;
    if (!sync) return { spec: v, runtime, key };
    if (v.runtime.kind !== 'onnx') {
      // a remote endpoint: concurrent requests share calls too (one InvokeEndpoint / predict for many rows), with a
      // few calls in flight at once, each bounded by the earliest deadline among its requests; no warm-up call
      const labels = { model: m.manifest.name, version: v.version };
      const batcher = new DynamicBatcher(runtime, {
        featureCount: m.manifest.features.length,
        maxRows: sync.maxBatchSize,
        maxWaitMs: sync.maxBatchWaitMs,
        maxConcurrentRuns: REMOTE_CALLS_IN_FLIGHT,
        observer: {
          onRun(rows, seconds, ok) {
            metrics.inferenceDuration.observe({ ...labels, tier: 'sync', status: ok ? 'ok' : 'error' }, seconds);
            metrics.inferenceBatchSize.observe(labels, rows);
          },
        },
      });
      return { spec: v, runtime, batcher, key };
    }
    const p99 = await measureWarmup(runtime, typicalRow(m.manifest.features), this.#options.warmupRuns);
    metrics.warmupLatency.set({ model: m.manifest.name, version: v.version }, p99 / 1000);
    const labels = { model: m.manifest.name, version: v.version };
    const batcher = new DynamicBatcher(runtime, {
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
    return { spec: v, runtime, batcher, key, warmupP99Ms: p99 };
  }

  get(name: string): ServedModel | undefined {
    return this.#models.get(name);
  }

  list(): ServedModel[] {
    return [...this.#models.values()];
  }

  /** Ready when every sync model that is not refused has its primary loaded. */
  ready(): boolean {
    return this.list().every((m) => m.state === 'refused' || m.tier !== 'sync' || m.versions.has(m.version));
  }

  /** Applies a routing change (promotion, rollback, canary weights, shadows) to this process. */
  setRouting(name: string, routing: RoutingState): void {
    const model = this.#models.get(name);
    if (!model) return;
    model.routing = routing;
  }

  /**
   * Swaps in freshly loaded manifests. Unchanged versions keep their warm runtimes; new ones are loaded and warmed
   * before the swap; requests in flight hold their model and version and finish on them. Runtimes no longer used are
   * closed once nothing is in flight on them.
   */
  async reload(loaded: LoadedModel[], routingOverrides: Map<string, RoutingState> = new Map()): Promise<void> {
    const previous = this.#models;
    const reuse = new Map<string, ServedVersion>();
    for (const m of previous.values()) for (const v of m.versions.values()) reuse.set(v.key, v);
    const next = await this.#build(loaded, reuse);
    for (const [name, routing] of routingOverrides) {
      const m = next.get(name);
      if (m && routing.primary && m.versions.has(routing.primary)) {
        m.routing = routing;
      }
    }
    this.#models = next;
    const kept = new Set<string>();
    for (const m of next.values()) for (const v of m.versions.values()) kept.add(v.key);
    const retired = [...reuse.values()].filter((v) => !kept.has(v.key));
    if (retired.length > 0) {
      const closeLater = setTimeout(() => void Promise.allSettled(retired.map((v) => v.runtime.close())), 30_000);
      closeLater.unref();
    }
  }

  /**
   * Scores a sync request. `instances` is validated first (bad input costs no capacity), then admitted against the
   * concurrency bound, routed (canary split), raced against `deadlineMs`, and finally mirrored to shadows.
   */
  async predict(
    model: ServedModel,
    instances: readonly unknown[],
    deadlineMs: number,
    options: { subjectKey?: string } = {},
  ): Promise<PredictResult> {
    const sync = model.manifest.sync;
    const name = model.manifest.name;
    if (model.state === 'refused' || !sync || !model.versions.has(model.version)) {
      throw new Problem('not_ready', `model "${name}" is not being served: ${model.refusal ?? 'not loaded'}`, {
        headers: { 'retry-after': '30' },
      });
    }
    const input = encodeInstances(model.manifest.features, instances);
    if (model.inFlight >= sync.maxConcurrency) {
      this.#options.metrics.shed.inc({ model: name });
      throw new Problem('overloaded', `model "${name}" is at its concurrency bound (${sync.maxConcurrency})`, {
        headers: { 'retry-after': '1' },
      });
    }
    const routing = model.routing;
    const chosen = chooseVersion(name, routing, options.subjectKey, this.#random);
    const route = chosen === routing.primary ? 'primary' : 'canary';
    const started = performance.now();
    const deadlineAt = Date.now() + deadlineMs;
    const rows = instances.length;

    model.inFlight++;
    const inFlightGauge = this.#inFlightGauge({ model: name });
    inFlightGauge.inc();
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      model.inFlight--;
      inFlightGauge.dec();
    };

    let result: PredictResult;
    try {
      // a canary named by a routing change that a reload no longer loads falls back to the primary
      const version = (model.versions.get(chosen) ?? model.versions.get(routing.primary)) as ServedVersion;
      const fallback = version.spec.fallback ? model.versions.get(version.spec.fallback) : undefined;
      // a remote version with a fallback must give up early enough for the fallback to answer within the deadline
      const reserveMs = fallback && version.spec.runtime.kind !== 'onnx' ? fallbackReserveMs(fallback, deadlineMs) : 0;
      try {
        const outputs = await this.#score(
          version,
          input,
          rows,
          deadlineAt - reserveMs,
          deadlineMs - reserveMs,
          release,
        );
        result = { predictions: shapePredictions(model.manifest.output, outputs, rows), version: version.spec.version };
      } catch (err) {
        if (
          !fallback ||
          (err instanceof Problem && err.code !== 'upstream_failed' && err.code !== 'deadline_exceeded')
        ) {
          throw err;
        }
        if (Date.now() >= deadlineAt) throw err;
        const reason = err instanceof Problem ? err.code : 'error';
        this.#options.metrics.fallbacks.inc({ model: name, version: chosen, reason });
        const outputs = await this.#score(fallback, input, rows, deadlineAt, deadlineAt - Date.now(), () => {});
        result = {
          predictions: shapePredictions(model.manifest.output, outputs, rows),
          version: fallback.spec.version,
          fallback: { from: chosen, reason },
        };
      }
    } catch (err) {
      // anything but a Problem failed before the work was handed to a runtime: nothing else will free the slot
      if (!(err instanceof Problem)) release();
      // counted once, for the 504 the caller gets (not for a primary miss the fallback answered in time)
      if (err instanceof Problem && err.code === 'deadline_exceeded') {
        this.#options.metrics.deadlineExceeded.inc({ model: name });
      }
      throw err;
    }
    this.#routedRequests({ model: name, version: result.version, route: result.fallback ? 'fallback' : route }).inc();
    if (routing.shadow && this.#options.shadow && this.#random() < routing.shadow.sampleRate) {
      const primaryMs = performance.now() - started;
      // after the answer, off the request's path: setImmediate lets the response go out first
      setImmediate(() => this.#mirror(model, routing, input, rows, result, primaryMs));
    }
    return result;
  }

  /** Runs one version within the deadline; `release` frees the request's concurrency slot when the work is done. */
  async #score(
    version: ServedVersion,
    input: Float32Array,
    rows: number,
    deadlineAt: number,
    deadlineMs: number,
    release: () => void,
  ): Promise<Record<string, OutputTensor>> {
    let cancel = () => {};
    let work: Promise<Record<string, OutputTensor>>;
    if (version.batcher) {
      const submission = version.batcher.submit(input, rows, deadlineAt);
      cancel = submission.cancel;
      work = submission.result;
    } else {
      try {
        work = version.runtime.run(input, rows, { deadline: deadlineAt });
      } catch (err) {
        work = Promise.reject(err); // a runtime that throws instead of rejecting still frees the slot below
      }
    }
    // the slot is held until the runtime is done with the work (or it is withdrawn), whatever the caller saw: a
    // deadline answered early does not free capacity the runtime is still using
    work.then(release, release);
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => {
          cancel();
          reject(
            new Problem('deadline_exceeded', `no score within ${deadlineMs} ms`, {
              extensions: { action: NO_SCORE_ACTION, deadlineMs },
            }),
          );
        },
        Math.max(0, deadlineMs),
      );
    });
    try {
      return await Promise.race([work, deadline]);
    } catch (err) {
      if (err instanceof Problem) throw err;
      if (err instanceof BatchCancelled) {
        throw new Problem('deadline_exceeded', 'no score within the deadline', {
          extensions: { action: NO_SCORE_ACTION },
        });
      }
      const remote = remoteFailure(err);
      if (remote) throw remote;
      throw new Problem('inference_failed', 'the model failed to score this request', {
        extensions: { action: NO_SCORE_ACTION },
        cause: err,
      });
    } finally {
      clearTimeout(timer);
    }
  }

  async #mirror(
    model: ServedModel,
    routing: RoutingState,
    input: Float32Array,
    rows: number,
    primary: PredictResult,
    primaryMs: number,
  ): Promise<void> {
    const recorder = this.#options.shadow;
    if (!recorder || !routing.shadow) return;
    const name = model.manifest.name;
    const primaryComparable = primary.predictions.map((p) => comparable(model.manifest.output, p));
    for (const shadowVersion of routing.shadow.versions) {
      const served = model.versions.get(shadowVersion);
      if (!served || shadowVersion === primary.version) continue;
      const inFlight = this.#shadowInFlight.get(name) ?? 0;
      if (inFlight >= MAX_SHADOW_IN_FLIGHT) {
        this.#options.metrics.shadowDropped.inc({ model: name });
        continue;
      }
      this.#shadowInFlight.set(name, inFlight + 1);
      const started = performance.now();
      try {
        const outputs = served.batcher
          ? await served.batcher.submit(input, rows, Date.now() + (model.manifest.sync?.latencyBudgetMs ?? 1000)).result
          : await served.runtime.run(input, rows, {
              deadline: Date.now() + (model.manifest.sync?.latencyBudgetMs ?? 1000),
            });
        const shadow = shapePredictions(model.manifest.output, outputs, rows).map((p) =>
          comparable(model.manifest.output, p),
        );
        recorder.record({
          model: name,
          primaryVersion: primary.version,
          shadowVersion,
          primary: primaryComparable,
          shadow,
          primaryMs,
          shadowMs: performance.now() - started,
        });
      } catch (err) {
        recorder.record({
          model: name,
          primaryVersion: primary.version,
          shadowVersion,
          primary: primaryComparable,
          primaryMs,
          shadowMs: performance.now() - started,
          error: (err as Error).message,
        });
      } finally {
        this.#shadowInFlight.set(name, (this.#shadowInFlight.get(name) ?? 1) - 1);
      }
    }
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.list().flatMap((m) => [...m.versions.values()].map((v) => v.runtime.close())));
  }
}

/**
 * The part of a request's deadline kept back from a remote version for its in-process fallback, so a slow endpoint
 * (whose timeout defaults to the whole budget, or a caller's shorter deadline) still leaves the fallback time to
 * answer: a fifth of the deadline, at least 10 ms and twice the fallback's warm-up p99, at most half the deadline.
 */
function fallbackReserveMs(fallback: ServedVersion, deadlineMs: number): number {
  const wanted = Math.max(10, Math.ceil(2 * (fallback.warmupP99Ms ?? 0)), Math.ceil(deadlineMs / 5));
  return Math.min(wanted, Math.floor(deadlineMs / 2));
}

/** A remote runtime's failure as the caller sees it: a timeout is a deadline miss, anything else a 502. */
function remoteFailure(err: unknown): Problem | undefined {
  const e = err as { name?: string; kind?: string; message?: string };
  if (e?.name !== 'RemoteError') return undefined;
  if (e.kind === 'timeout') {
    return new Problem('deadline_exceeded', 'the remote model did not answer in time', {
      extensions: { action: NO_SCORE_ACTION },
    });
  }
  return new Problem('upstream_failed', `the remote model failed (${e.kind})`, {
    extensions: { action: NO_SCORE_ACTION, upstream: e.kind },
  });
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
