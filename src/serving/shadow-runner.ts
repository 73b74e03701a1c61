import type { CatalogModel, ModelCatalog } from './catalog.ts';
import type { EncodedInput } from './deadline.ts';
import { type Prediction, shapePredictions } from './predictions.ts';
import type { RoutingState } from './routing.ts';
import { type Comparable, comparable, type ShadowRecorder } from './shadow.ts';
import type { OffloadOutcome, ShadowThread } from './shadow-offload.ts';

/** Shadow runs in flight per model beyond which sampled mirrors are shed (and counted), never queued. */
export const MAX_SHADOW_IN_FLIGHT = 256;

/** Why a sampled mirror was not scored: the gateway under pressure, or the shadow's bound reached. */
export type ShedReason = 'pressure' | 'saturated';

export type ShadowOutcome = { version: string; ms: number } & (
  | { predictions: Prediction[]; error?: undefined }
  | { error: string; predictions?: undefined }
);

/** Scores one shadow version on this thread (the tier's own runners): outputs or errors, never thrown. */
export type InlineShadow = (
  model: CatalogModel,
  version: string,
  input: EncodedInput,
  deadlineMs: number,
) => Promise<ShadowOutcome>;

/** The primary's side of a mirrored request. */
export interface MirroredAnswer {
  version: string;
  predictions: Prediction[];
  ms: number;
}

/**
 * Where a sampled mirror scores, after the primary answered: in-process ONNX shadows in the low-priority shadow
 * thread (when the process has one), fed by a bounded queue; other shadows (remote endpoints: I/O, not CPU; or a
 * tier's injected runtimes) on this thread through the tier's runners, bounded by shadows in flight. Past a bound the
 * mirror is shed and counted; every outcome is recorded and compared, never returned to anyone.
 */
export class ShadowMirror {
  readonly #recorder: ShadowRecorder;
  readonly #catalog: ModelCatalog;
  readonly #inline: InlineShadow;
  readonly #thread: ShadowThread | undefined;
  #inFlight = new Map<string, number>();

  constructor(options: {
    recorder: ShadowRecorder;
    catalog: ModelCatalog;
    inline: InlineShadow;
    thread?: ShadowThread | undefined;
  }) {
    this.#recorder = options.recorder;
    this.#catalog = options.catalog;
    this.#inline = options.inline;
    this.#thread = options.thread;
  }

  /** Counts a sampled mirror that will not be scored, per shadow version. */
  shed(model: CatalogModel, shadow: NonNullable<RoutingState['shadow']>, primaryVersion: string, reason: ShedReason) {
    for (const version of shadow.versions) {
      if (version !== primaryVersion) this.#recorder.shed(model.name, version, reason);
    }
  }

  /**
   * Mirrors the request to each shadow version. Thread-scored shadows are queued here (a push: the copy and the post
   * happen once per tick); the others start after the response went out (setImmediate), one after another.
   */
  mirror(
    model: CatalogModel,
    shadow: NonNullable<RoutingState['shadow']>,
    input: EncodedInput,
    primary: MirroredAnswer,
    deadlineMs: number,
  ): void {
    const inline: string[] = [];
    let primaryComparable: Comparable[] | undefined;
    const record = (version: string, ms: number, outcome: { predictions: Prediction[] } | { error: string }) => {
      primaryComparable ??= primary.predictions.map((p) => comparable(model.manifest.output, p));
      this.#recorder.record({
        model: model.name,
        primaryVersion: primary.version,
        shadowVersion: version,
        primary: primaryComparable,
        primaryMs: primary.ms,
        shadowMs: ms,
        ...('predictions' in outcome
          ? { shadow: outcome.predictions.map((p) => comparable(model.manifest.output, p)) }
          : { error: outcome.error }),
      });
    };
    for (const version of shadow.versions) {
      if (version === primary.version || this.#catalog.suspension(model.name, version)) continue;
      if (!this.#thread?.serves(model, version)) {
        inline.push(version);
        continue;
      }
      const queued = this.#thread.submit(model, version, input, (outcome: OffloadOutcome) =>
        record(version, outcome.ms, shaped(model, outcome, input.rows)),
      );
      if (!queued) this.#recorder.shed(model.name, version, 'saturated');
    }
    if (inline.length > 0) {
      // after the answer, off the caller's path: setImmediate lets the response go out first
      setImmediate(() => void this.#runInline(model, inline, input, deadlineMs, record));
    }
  }

  async #runInline(
    model: CatalogModel,
    versions: string[],
    input: EncodedInput,
    deadlineMs: number,
    record: (version: string, ms: number, outcome: { predictions: Prediction[] } | { error: string }) => void,
  ): Promise<void> {
    for (const version of versions) {
      const inFlight = this.#inFlight.get(model.name) ?? 0;
      if (inFlight >= MAX_SHADOW_IN_FLIGHT) {
        this.#recorder.shed(model.name, version, 'saturated');
        continue;
      }
      this.#inFlight.set(model.name, inFlight + 1);
      const outcome = await this.#inline(model, version, input, deadlineMs);
      this.#inFlight.set(model.name, (this.#inFlight.get(model.name) ?? 1) - 1);
      record(version, outcome.ms, outcome);
    }
  }
}

/** The thread's raw outputs as predictions, as the tier would have shaped them; a shape error is the shadow's error. */
function shaped(
  model: CatalogModel,
  outcome: OffloadOutcome,
  rows: number,
): { predictions: Prediction[] } | { error: string } {
  if (outcome.error !== undefined) return { error: outcome.error };
  try {
    return { predictions: shapePredictions(model.manifest.output, outcome.outputs, rows, model.corpus) };
  } catch (err) {
    return { error: (err as Error).message };
  }
}
