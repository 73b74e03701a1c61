import { Problem } from '../platform/errors.ts';
import type { Metrics } from '../platform/metrics.ts';
import type { Tier } from '../registry/schema.ts';
import type { OutputTensor } from '../runtime/types.ts';
import type { CatalogModel, ModelCatalog } from './catalog.ts';
import { type EncodedInput, fallbackReserveMs, run } from './deadline.ts';
import { type Prediction, shapePredictions } from './predictions.ts';
import { NO_SCORE_ACTION, suspendedProblem } from './refusals.ts';
import type { Runner, Runners } from './runners.ts';
import type { ShadowRecorder } from './shadow.ts';
import type { ShadowThread } from './shadow-offload.ts';
import { ShadowMirror, type ShadowOutcome } from './shadow-runner.ts';

export { NO_SCORE_ACTION, SILENT_ACTION } from './refusals.ts';
export type { EncodedInput, ShadowOutcome };

export interface ScoreRequest {
  model: CatalogModel;
  input: EncodedInput;
  tier: Tier;
  /** how long the caller waits: past it, no score (a 504 for a bedside caller, a retry for a job) */
  deadlineMs: number;
  /** how much of the deadline the request spent before it reached the scorer (its body read, validation): default 0 */
  spentMs?: number;
  /** a version fixed earlier (a job or a run records its version when accepted); else the catalog chooses */
  version?: string;
  /** a patient or encounter key: the canary split is sticky per subject */
  subjectKey?: string;
  /** called once the runtime no longer holds the work, whatever the caller saw (frees a concurrency slot) */
  onIdle?: () => void;
  /** mirror sampled traffic to the routing's shadows after the answer (default true) */
  mirror?: boolean;
}

export interface ScoreResult {
  predictions: Prediction[];
  /** the version that answered */
  version: string;
  /** set when a declared fallback answered because the routed version failed */
  fallback?: { from: string; reason: string };
  /** silent deployment: the version scored (observers saw it) but no prediction is shown */
  silent?: true;
}

type ScorerMetrics = Pick<Metrics, 'fallbacks' | 'routedRequests'>;

/** What one scoring produced, for observers (monitoring taps): aggregates only may leave the process. */
export interface ScoreEvent {
  model: CatalogModel;
  tier: Tier;
  input: EncodedInput;
  result: ScoreResult;
  /** time in the scorer, ms */
  ms: number;
}

/**
 * Sees every successful scoring on every tier, on the caller's path: it must be cheap (count and aggregate in
 * memory, flush elsewhere) and must not throw.
 */
export interface ScoreObserver {
  onScore(event: ScoreEvent): void;
}

/**
 * The one place a model scores, for every tier: version choice through the catalog, the runtime call bounded by the
 * caller's deadline, the declared fallback, output shaping, and the bounded shadow mirror after the answer.
 */
export class Scorer {
  readonly #catalog: ModelCatalog;
  readonly #runners: Runners;
  readonly #mirror: ShadowMirror | undefined;
  readonly #metrics: ScorerMetrics | undefined;
  readonly #random: () => number;
  readonly #observers: readonly ScoreObserver[];
  readonly #pressure: { readonly busy: boolean } | undefined;

  constructor(options: {
    catalog: ModelCatalog;
    runners: Runners;
    shadow?: ShadowRecorder;
    /** in-process ONNX shadows score there, off this thread (without it they score through `runners`) */
    shadowThread?: ShadowThread;
    metrics?: ScorerMetrics;
    random?: () => number;
    observers?: readonly ScoreObserver[];
    /** while busy, sampled shadow mirrors are dropped (and counted): bedside answers come first */
    pressure?: { readonly busy: boolean };
  }) {
    this.#pressure = options.pressure;
    this.#observers = options.observers ?? [];
    this.#catalog = options.catalog;
    this.#runners = options.runners;
    this.#mirror = options.shadow
      ? new ShadowMirror({
          recorder: options.shadow,
          catalog: options.catalog,
          thread: options.shadowThread,
          inline: (model, version, input, deadlineMs) => this.#shadowRun(model, version, input, deadlineMs),
        })
      : undefined;
    this.#metrics = options.metrics;
    this.#random = options.random ?? Math.random;
  }

  async score(req: ScoreRequest): Promise<ScoreResult> {
    const { model, input } = req;
    const started = performance.now();
    const remainingMs = req.deadlineMs - (req.spentMs ?? 0);
    // epoch ms, whole (what remote runtimes bound their timeouts and retries by)
    const deadlineAt = Math.floor(Date.now() + remainingMs);
    const chosen = req.version ?? this.#catalog.chooseVersion(model, req.subjectKey);
    let onIdle = req.onIdle;
    let result: ScoreResult;
    try {
      // the kill switch, for every tier: nothing scores on a suspended version (a job waits, a batch run pauses)
      const suspension = this.#catalog.suspension(model.name, chosen);
      if (suspension) throw suspendedProblem(suspension, chosen);
      // a canary named by a routing change that a reload no longer loads falls back to the primary
      const routed = this.#runner(model, chosen);
      const runner =
        (routed instanceof Promise ? await routed : routed) ??
        (req.version === undefined ? await this.#runner(model, model.version) : undefined);
      if (!runner) throw new Problem('not_ready', `model "${model.name}" version "${chosen}" is not served here`);
      // admission on queueing delay: a request that would wait past its deadline is refused now, with time to go
      // elsewhere, rather than queued to time out; the requests already admitted keep their budget
      const waitMs = runner.expectedWaitMs?.(input.rows) ?? 0;
      if (waitMs > remainingMs) {
        throw new Problem(
          'overloaded',
          `model "${model.name}" would only start scoring after about ${Math.ceil(waitMs)} ms, past the ${req.deadlineMs} ms deadline`,
          { headers: { 'retry-after': '1' }, extensions: { action: NO_SCORE_ACTION, reason: 'queue_delay' } },
        );
      }
      const fallbackVersion = runner.spec.fallback;
      const fallback =
        fallbackVersion === undefined || this.#catalog.suspension(model.name, fallbackVersion)
          ? undefined
          : await this.#runner(model, fallbackVersion);
      // a remote version with a fallback must give up early enough for the fallback to answer within the deadline
      const reserveMs =
        fallback && runner.spec.runtime.kind !== 'onnx' ? fallbackReserveMs(fallback, req.deadlineMs) : 0;
      const idle = onIdle;
      onIdle = undefined; // from here the runtime's work frees the slot
      try {
        const outputs = await run(runner, input, deadlineAt - reserveMs, remainingMs - reserveMs, idle, {
          reportedMs: req.deadlineMs - reserveMs,
        });
        result = { predictions: this.#shape(model, outputs, input.rows), version: runner.spec.version };
      } catch (err) {
        const reason = err instanceof Problem ? err.code : 'error';
        if (!fallback || (reason !== 'upstream_failed' && reason !== 'deadline_exceeded')) throw err;
        if (Date.now() >= deadlineAt) throw err;
        this.#metrics?.fallbacks.inc({ model: model.name, version: chosen, reason });
        const outputs = await run(fallback, input, deadlineAt, deadlineAt - Date.now(), undefined);
        result = {
          predictions: this.#shape(model, outputs, input.rows),
          version: fallback.spec.version,
          fallback: { from: chosen, reason },
        };
      }
    } finally {
      onIdle?.(); // the work never reached a runtime
    }
    if (this.#observers.length > 0) {
      const event = { model, tier: req.tier, input, result, ms: performance.now() - started };
      for (const observer of this.#observers) observer.onScore(event);
    }
    if (req.version === undefined) {
      const route = result.fallback ? 'fallback' : chosen === model.version ? 'primary' : 'canary';
      this.#metrics?.routedRequests.inc({ model: model.name, version: result.version, route });
    }
    const shadow = model.routing.shadow;
    if (req.mirror !== false && shadow && this.#mirror && this.#random() < shadow.sampleRate) {
      if (this.#pressure?.busy) this.#mirror.shed(model, shadow, result.version, 'pressure');
      else {
        const primary = { version: result.version, predictions: result.predictions, ms: performance.now() - started };
        this.#mirror.mirror(model, shadow, input, primary, req.deadlineMs);
      }
    }
    // silent deployment: recorded by the observers above, never shown to any tier's caller
    if (model.routing.silent && result.version === model.routing.primary)
      return { ...result, predictions: [], silent: true };
    return result;
  }

  /** Scores the same rows with each shadow version, one after another: outputs or errors, never thrown. */
  async shadowScores(
    model: CatalogModel,
    versions: readonly string[],
    input: EncodedInput,
    deadlineMs: number,
  ): Promise<ShadowOutcome[]> {
    const out: ShadowOutcome[] = [];
    for (const version of versions) out.push(await this.#shadowRun(model, version, input, deadlineMs));
    return out;
  }

  async #shadowRun(
    model: CatalogModel,
    version: string,
    input: EncodedInput,
    deadlineMs: number,
  ): Promise<ShadowOutcome> {
    const started = performance.now();
    try {
      if (this.#catalog.suspension(model.name, version)) throw new Error(`version ${version} is suspended`);
      const runner = await this.#runners.get(model, version);
      if (!runner) throw new Error(`version ${version} is not served here`);
      const outputs = await run(runner, input, Date.now() + deadlineMs, deadlineMs, undefined);
      return { version, predictions: this.#shape(model, outputs, input.rows), ms: performance.now() - started };
    } catch (err) {
      return { version, error: (err as Error).message, ms: performance.now() - started };
    }
  }

  /** A runner, without a microtask when the tier has it at hand (the sync tier's are warm, not promised). */
  #runner(model: CatalogModel, version: string): Runner | Promise<Runner | undefined> | undefined {
    return this.#runners.get(model, version);
  }

  #shape(model: CatalogModel, outputs: Record<string, OutputTensor>, rows: number): Prediction[] {
    return shapePredictions(model.manifest.output, outputs, rows, model.corpus);
  }
}
