import { requestRef } from '../outcomes/prediction-log.ts';
import { Problem } from '../platform/errors.ts';
import { labelled, type Metrics } from '../platform/metrics.ts';
import type { CatalogModel, ModelCatalog } from '../serving/catalog.ts';
import { encodeInstances } from '../serving/features.ts';
import { deadlineProblem } from '../serving/refusals.ts';
import type { ScoreResult, Scorer } from '../serving/scorer.ts';
import type { SyncModelState, SyncRunners } from './runners.ts';

/** A sync model's serving status, as the registry and readiness report it. */
export interface SyncStatus extends SyncModelState {
  /** requests admitted and not finished, all versions together: the concurrency bound counts these */
  inFlight: number;
}

/**
 * The bedside tier: a request is validated first (bad input costs no capacity), admitted against the model's
 * concurrency bound (503 past it), and scored by the one scorer within its deadline (504 past it, never a late
 * score). Manifests reload through the catalog; requests in flight finish on the versions they started on.
 */
export class SyncService {
  readonly #catalog: ModelCatalog;
  readonly #runners: SyncRunners;
  readonly #scorer: Scorer;
  readonly #metrics: Metrics;
  /** in-flight counts by model name, kept across reloads so requests started before a swap are released in them */
  readonly #inFlight = new Map<string, { n: number }>();
  readonly #inFlightGauge;

  constructor(options: { catalog: ModelCatalog; runners: SyncRunners; scorer: Scorer; metrics: Metrics }) {
    this.#catalog = options.catalog;
    this.#runners = options.runners;
    this.#scorer = options.scorer;
    this.#metrics = options.metrics;
    this.#inFlightGauge = labelled(options.metrics.inFlight);
  }

  /** Loads and warms the catalog's sync models now, and the next ones before every reload swaps them in. */
  async start(): Promise<void> {
    await this.#runners.prepare(this.#catalog.list());
    this.#catalog.onReload((next) => this.#runners.prepare(next));
  }

  status(name: string): SyncStatus | undefined {
    const state = this.#runners.state(name);
    return state && { ...state, inFlight: this.#counter(name).n };
  }

  /** the versions of a model this process has warm */
  versions(name: string): string[] {
    return this.#runners.versions(name);
  }

  /** Ready when every sync model that is not refused has its primary warm. */
  ready(): boolean {
    return this.#catalog
      .list()
      .every((m) => m.tier !== 'sync' || this.#runners.state(m.name)?.state === 'refused' || this.#warm(m));
  }

  /** requests in flight over every model */
  inFlight(): number {
    let n = 0;
    for (const c of this.#inFlight.values()) n += c.n;
    return n;
  }

  async predict(
    model: CatalogModel,
    instances: readonly unknown[],
    deadlineMs: number,
    options: {
      subjectKey?: string;
      requestId?: string;
      /** per instance, the references to log it under instead of `request:<requestId>#<i>` (see EncodedInput.refs) */
      refs?: readonly (string | readonly string[])[];
      /** the calling client, the one that may report the outcomes (see EncodedInput.owners) */
      owner?: string;
      /**
       * when the request arrived (performance.now()): the deadline counts from there, so the time its body took to
       * arrive and be read is the caller's too (default: now)
       */
      arrivedAt?: number;
    } = {},
  ): Promise<ScoreResult> {
    const sync = model.manifest.sync;
    const name = model.name;
    const state = this.#runners.state(name);
    if (!sync || state?.state !== 'warm' || !this.#warm(model)) {
      throw new Problem('not_ready', `model "${name}" is not being served: ${state?.refusal ?? 'not loaded'}`, {
        headers: { 'retry-after': '30' },
      });
    }
    const spentMs = options.arrivedAt === undefined ? 0 : performance.now() - options.arrivedAt;
    if (spentMs >= deadlineMs) {
      this.#metrics.deadlineExceeded.inc({ model: name });
      throw deadlineProblem(deadlineMs);
    }
    const assumed = { rows: 0 };
    const data = encodeInstances(model.manifest.features, instances, '/instances', assumed);
    const counter = this.#counter(name);
    if (counter.n >= sync.maxConcurrency) {
      this.#metrics.shed.inc({ model: name, reason: 'concurrency' });
      throw new Problem('overloaded', `model "${name}" is at its concurrency bound (${sync.maxConcurrency})`, {
        headers: { 'retry-after': '1' },
      });
    }
    counter.n++;
    const gauge = this.#inFlightGauge({ model: name });
    gauge.inc();
    let released = false;
    const onIdle = () => {
      if (released) return;
      released = true;
      counter.n--;
      gauge.dec();
    };
    try {
      return await this.#scorer.score({
        model,
        input: {
          data,
          rows: instances.length,
          assumedRows: assumed.rows,
          // what an outcome reported later names each row by
          ...(options.refs !== undefined ? { refs: options.refs } : requestRefs(options.requestId, instances.length)),
          ...(options.owner !== undefined ? { owners: [options.owner] } : {}),
        },
        tier: 'sync',
        deadlineMs,
        spentMs,
        ...(options.subjectKey !== undefined ? { subjectKey: options.subjectKey } : {}),
        onIdle,
      });
    } catch (err) {
      // counted once, for the 504 the caller gets (not for a primary miss the fallback answered in time)
      if (err instanceof Problem && err.code === 'deadline_exceeded')
        this.#metrics.deadlineExceeded.inc({ model: name });
      if (err instanceof Problem && err.code === 'overloaded')
        this.#metrics.shed.inc({ model: name, reason: 'queue_delay' });
      throw err;
    }
  }

  #warm(model: CatalogModel): boolean {
    return this.#runners.has(model.name, model.version);
  }

  #counter(name: string): { n: number } {
    let counter = this.#inFlight.get(name);
    if (!counter) {
      counter = { n: 0 };
      this.#inFlight.set(name, counter);
    }
    return counter;
  }

  close(): Promise<void> {
    return this.#runners.close();
  }
}

/** Each instance's reference by the request it came in (none without a request id). */
function requestRefs(requestId: string | undefined, rows: number): { refs?: string[] } {
  return requestId === undefined ? {} : { refs: Array.from({ length: rows }, (_, i) => requestRef(requestId, i)) };
}
