import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { actorOf, mayUseModel, type Principal } from '../platform/auth.ts';
import { Problem } from '../platform/errors.ts';
import type { HoldState, RunHold, RunHoldStore } from './review-store.ts';
import { type BatchRun, HELD_FILE, outputKey } from './runs.ts';

const MAX_REASON = 2000;
/** held rows a reviewer sees in a run's summary (the files themselves stay behind the decision) */
export const SAMPLE_ROWS = 10;

/** What a run's requester may have of it now: everything, the rows released at once, or nothing yet (or ever). */
export type Release = 'open' | 'partial' | 'awaiting_review' | 'rejected';

/** The rows a finished run holds for review: all it scored, or those at or above the threshold. */
export function heldRowsOf(run: BatchRun): number {
  return run.review === 'run' ? run.scored : run.review === 'above-threshold' ? run.above : 0;
}

/** How a run's review stands for its requester: `open` when it has none, held nothing, or was approved. */
export function releaseOf(run: BatchRun, hold: RunHold | undefined): Release {
  // a completed run that scored nothing to hold has nothing to review (only errors, or only rows below the threshold)
  if (!run.review || heldRowsOf(run) === 0) return 'open';
  // fail closed: a run that must be reviewed and has no hold yet is held
  const state: HoldState = hold?.state ?? 'held';
  if (state === 'approved') return 'open';
  if (state === 'rejected') return run.review === 'run' ? 'rejected' : 'partial';
  return run.review === 'run' ? 'awaiting_review' : 'partial';
}

/**
 * Whether one of a run's files may be served: with a whole-run hold, none before approval; with an above-threshold
 * hold, the rows below the threshold and the error file at once, the held rows and the shadow files (they score every
 * row, the held ones too) only after approval. A rejected run's held material is never served.
 */
export function fileRefusal(run: BatchRun, hold: RunHold | undefined, file: string): Problem | undefined {
  const release = releaseOf(run, hold);
  if (release === 'open') return file === HELD_FILE && run.review !== 'above-threshold' ? notFound() : undefined;
  if (release === 'partial' && (file === 'output.ndjson' || file === 'errors.ndjson')) return undefined;
  if (release === 'rejected' || hold?.state === 'rejected') {
    return new Problem('output_rejected', 'a reviewer rejected this output: it is never served');
  }
  return new Problem('awaiting_review', 'this output is held for clinician review: it is served once approved', {
    extensions: { review: { state: 'awaiting_review', heldRows: hold?.heldRows ?? null } },
  });
}

const notFound = () => new Problem('not_found', 'no such file');

export interface BatchReviewDeps {
  store: RunHoldStore;
  runs: { get(id: string): Promise<BatchRun | undefined> };
  storage: { openOutput(key: string): Promise<Readable> };
  now: () => number;
  /** told of every decision applied (monitoring counts a rejected run as an override of its version) */
  onDecision?: (model: string, version: string, decision: 'approve' | 'reject') => void;
  /**
   * queues the run's publication to its bucket as decided (the batch worker uploads it, retried: never in the
   * decision's request); asked after every decision, the job finds what, if anything, is to be published
   */
  publish?: (runId: string, model: string) => Promise<void>;
  logger?: Pick<Logger, 'warn'>;
}

/**
 * Clinician review of batch output (a model's `batch.review`): a finished run is held, reviewers see what waits and a
 * sample of it, and one decision releases or rejects it. Roles, the 409 of a second decision and the audit entry
 * are the async review desk's; a reviewer never decides a run they requested.
 */
export class BatchReviewService {
  readonly #d: BatchReviewDeps;

  constructor(deps: BatchReviewDeps) {
    this.#d = deps;
  }

  now(): number {
    return this.#d.now();
  }

  /** The hold of a run that has a review (undefined otherwise, or before it finished). */
  async holdOf(run: BatchRun): Promise<RunHold | undefined> {
    return run.review ? this.#d.store.get(run.id) : undefined;
  }

  /** Called by the batch worker when a reviewed run has finished scoring, before it is marked completed. */
  async holdFinished(run: BatchRun): Promise<void> {
    const heldRows = heldRowsOf(run);
    if (!run.review || heldRows === 0) return;
    const heldAt = this.#d.now();
    await this.#d.store.create(
      {
        runId: run.id,
        model: run.model,
        version: run.version,
        hold: run.review,
        requestedBy: run.requestedBy,
        heldAt,
        scored: run.scored,
        above: run.above,
        heldRows,
      },
      {
        actor: run.requestedBy,
        role: 'system',
        action: 'batch.hold',
        target: run.id,
        model: run.model,
        version: run.version,
        detail: `${run.review}: ${heldRows} of ${run.scored} scored rows held`,
      },
    );
  }

  /** A held run the reviewer may see: one of a model outside the reviewer's `models` is a 404, like an unknown id. */
  async item(principal: Principal, runId: string): Promise<{ hold: RunHold; run: BatchRun }> {
    const hold = /^[A-Za-z0-9-]{1,140}$/.test(runId) ? await this.#d.store.get(runId) : undefined;
    const run = hold && mayUseModel(principal, hold.model) ? await this.#d.runs.get(runId) : undefined;
    if (!hold || !run) throw new Problem('not_found', 'no such batch review');
    return { hold, run };
  }

  /** Held runs, oldest first (a model's only, when named; the caller has checked the reviewer may use it). */
  async pending(
    principal: Principal,
    model: string | undefined,
    offset: number,
    limit: number,
  ): Promise<{ items: RunHold[]; total: number }> {
    // the model's shard (and runs held before shards, filtered here by their model)
    const held = await this.#d.store.held(model, 10_000);
    const holds = (await Promise.all(held.map((h) => this.#d.store.get(h.runId)))).filter(
      (h): h is RunHold =>
        h !== undefined && (model === undefined || h.model === model) && mayUseModel(principal, h.model),
    );
    return { items: holds.slice(offset, offset + limit), total: holds.length };
  }

  /** The first held rows (the whole output of a whole-run hold, the held file of an above-threshold one). */
  async sample(run: BatchRun): Promise<Array<Record<string, unknown>>> {
    const key = outputKey(run, run.review === 'above-threshold' ? HELD_FILE : 'output.ndjson');
    const source = await this.#d.storage.openOutput(key).catch(() => undefined);
    if (!source) return [];
    const rows: Array<Record<string, unknown>> = [];
    const lines = createInterface({ input: source, crlfDelay: Infinity });
    for await (const line of lines) {
      if (line.trim() !== '') rows.push(JSON.parse(line) as Record<string, unknown>);
      if (rows.length >= SAMPLE_ROWS) break;
    }
    lines.close();
    source.destroy();
    return rows;
  }

  /**
   * Queues a decided run's publication, then clears it from the outbox the decision left it in. The decision is
   * applied whatever happens here: a publication not queued stays in the outbox, and the maintenance sweep queues it.
   */
  async #queuePublication(runId: string, model: string): Promise<void> {
    if (!this.#d.publish) return;
    try {
      await this.#d.publish(runId, model);
      await this.#d.store.publishQueued(runId);
    } catch (err) {
      this.#d.logger?.warn({ runId, err: { message: (err as Error).message } }, 'batch publication left for the sweep');
    }
  }

  /**
   * Queues the publications of decisions whose process stopped before queueing them (the maintenance sweep); a
   * publication queued twice runs once (its job id is the run's).
   */
  async queueOutstandingPublications(): Promise<number> {
    if (!this.#d.publish) return 0;
    let queued = 0;
    for (const runId of await this.#d.store.toPublish()) {
      const hold = await this.#d.store.get(runId);
      if (hold) await this.#d.publish(runId, hold.model);
      await this.#d.store.publishQueued(runId);
      if (hold) queued++;
    }
    return queued;
  }

  /** Approves or rejects a held run once; a second decision is 409 `already_decided`. */
  async decide(principal: Principal, runId: string, body: { decision?: unknown; reason?: unknown }): Promise<RunHold> {
    const { hold } = await this.item(principal, runId);
    const { decision, reason } = body;
    if (decision !== 'approve' && decision !== 'reject') {
      throw new Problem('invalid_request', 'decision must be "approve" or "reject"');
    }
    if (typeof reason !== 'string' || reason.trim().length === 0 || reason.length > MAX_REASON) {
      throw new Problem('invalid_request', `reason is required (1-${MAX_REASON} characters)`);
    }
    if (hold.requestedBy === `api:${principal.id}`) {
      throw new Problem('forbidden', 'you requested this run: another reviewer must decide it');
    }
    const result = await this.#d.store.decide(
      runId,
      {
        outcome: decision,
        by: principal.id,
        ...(principal.subject !== undefined ? { bySubject: principal.subject } : {}),
        ...(principal.name !== undefined ? { byName: principal.name } : {}),
        reason,
        at: this.#d.now(),
      },
      {
        ...actorOf(principal),
        action: `batch.review.${decision}`,
        target: runId,
        model: hold.model,
        version: hold.version,
        reason,
        detail: `${hold.hold}: ${hold.heldRows} of ${hold.scored} scored rows`,
      },
    );
    if (!result.ok) {
      if (result.previous === 'approved' || result.previous === 'rejected') {
        throw new Problem('already_decided', `this run was already decided (${result.previous})`);
      }
      throw new Problem('not_found', 'no such batch review');
    }
    this.#d.onDecision?.(hold.model, hold.version, decision);
    await this.#queuePublication(runId, hold.model);
    return (await this.#d.store.get(runId)) as RunHold;
  }
}
