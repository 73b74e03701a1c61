import { Problem } from '../platform/errors.ts';
import type { Metrics } from '../platform/metrics.ts';
import type { Tier } from '../registry/schema.ts';
import type { OutputTensor } from '../runtime/types.ts';
import type { CatalogModel, ModelCatalog } from './catalog.ts';
import { type EncodedInput, fallbackReserveMs, run } from './deadline.ts';
import { type Prediction, shapePredictions } from './predictions.ts';
import { NO_SCORE_ACTION, suspendedProblem } from './refusals.ts';
import type { RoutingState } from './routing.ts';
import type { Runner, Runners } from './runners.ts';
import { comparable, type ShadowRecorder } from './shadow.ts';

export { NO_SCORE_ACTION, SILENT_ACTION } from './refusals.ts';
export type { EncodedInput };
/** Shadow runs in flight per model beyond which sampled mirrors are dropped (and counted), never queued. */
export const MAX_SHADOW_IN_FLIGHT = 256;

export interface ScoreRequest {
  model: CatalogModel;
  input: EncodedInput;
  tier: Tier;
  /** how long the caller waits: past it, no score (a 504 for a bedside caller, a retry for a job) */
  deadlineMs: number;
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

export type ShadowOutcome = { version: string; ms: number } & (
  | { predictions: Prediction[]; error?: undefined }
  | { error: string; predictions?: undefined }
);

type ScorerMetrics = Pick<Metrics, 'fallbacks' | 'shadowDropped' | 'routedRequests'>;

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
  readonly #shadow: ShadowRecorder | undefined;
  readonly #metrics: ScorerMetrics | undefined;
  readonly #random: () => number;
  readonly #observers: readonly ScoreObserver[];
  readonly #pressure: { readonly busy: boolean } | undefined;
  #shadowInFlight = new Map<string, number>();

  constructor(options: {
    catalog: ModelCatalog;
    runners: Runners;
    shadow?: ShadowRecorder;
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
    this.#shadow = options.shadow;
    this.#metrics = options.metrics;
    this.#random = options.random ?? Math.random;
  }

  async score(req: ScoreRequest): Promise<ScoreResult> {
    const { model, input } = req;
    const started = performance.now();
    const deadlineAt = Date.now() + req.deadlineMs;
    const chosen = req.version ?? this.#catalog.chooseVersion(model, req.subjectKey);
    let onIdle = req.onIdle;
    let result: ScoreResult;
    try {
      // the kill switch, for every tier: nothing scores on a suspended version (a job waits, a batch run pauses)
      const suspension = this.#catalog.suspension(model.name, chosen);
      if (suspension) throw suspendedProblem(suspension, chosen);
      // a canary named by a routing change that a reload no longer loads falls back to the primary
      const runner =
        (await this.#runner(model, chosen)) ??
        (req.version === undefined ? await this.#runner(model, model.version) : undefined);
      if (!runner) throw new Problem('not_ready', `model "${model.name}" version "${chosen}" is not served here`);
      // admission on queueing delay: a request that would wait past its deadline is refused now, with time to go
      // elsewhere, rather than queued to time out; the requests already admitted keep their budget
      const waitMs = runner.expectedWaitMs?.(input.rows) ?? 0;
      if (waitMs > req.deadlineMs) {
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
        const outputs = await run(runner, input, deadlineAt - reserveMs, req.deadlineMs - reserveMs, idle);
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
    if (req.mirror !== false && shadow && this.#shadow && this.#random() < shadow.sampleRate) {
      if (this.#pressure?.busy) {
        this.#metrics?.shadowDropped.inc({ model: model.name, reason: 'pressure' }, shadow.versions.length);
        return result;
      }
      const primaryMs = performance.now() - started;
      const answered = result;
      // after the answer, off the caller's path: setImmediate lets the response go out first
      setImmediate(() => void this.#mirror(model, shadow, input, answered, primaryMs, req.deadlineMs));
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

  async #shadowRun(model: CatalogModel, version: string, input: EncodedInput, deadlineMs: number) {
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

  /** Shadows see the same input after the primary answered; bounded per model, their failures fail nothing. */
  async #mirror(
    model: CatalogModel,
    shadow: NonNullable<RoutingState['shadow']>,
    input: EncodedInput,
    primary: ScoreResult,
    primaryMs: number,
    deadlineMs: number,
  ): Promise<void> {
    const recorder = this.#shadow as ShadowRecorder;
    const primaryComparable = primary.predictions.map((p) => comparable(model.manifest.output, p));
    for (const version of shadow.versions) {
      if (version === primary.version || this.#catalog.suspension(model.name, version)) continue;
      const inFlight = this.#shadowInFlight.get(model.name) ?? 0;
      if (inFlight >= MAX_SHADOW_IN_FLIGHT) {
        this.#metrics?.shadowDropped.inc({ model: model.name, reason: 'saturated' });
        continue;
      }
      this.#shadowInFlight.set(model.name, inFlight + 1);
      const outcome = await this.#shadowRun(model, version, input, deadlineMs);
      this.#shadowInFlight.set(model.name, (this.#shadowInFlight.get(model.name) ?? 1) - 1);
      recorder.record({
        model: model.name,
        primaryVersion: primary.version,
        shadowVersion: version,
        primary: primaryComparable,
        primaryMs,
        shadowMs: outcome.ms,
        ...(outcome.predictions
          ? { shadow: outcome.predictions.map((p) => comparable(model.manifest.output, p)) }
          : { error: outcome.error }),
      });
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
