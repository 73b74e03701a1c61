import type { CallbackEvent, CallbackSender } from '../callbacks/outbox.ts';
import { actorOf, mayUseModel, modelScope, type Principal } from '../platform/auth.ts';
import { Problem } from '../platform/errors.ts';
import { onlyFields } from '../platform/json-body.ts';
import type { JobMetrics } from '../platform/metrics.ts';
import type { CatalogModel } from '../serving/catalog.ts';
import { validateAmendment } from './amendment.ts';
import type { JobRecord, JobStore } from './store.ts';

const MAX_REASON = 2000;

export interface ReviewServiceDeps {
  store: JobStore;
  callbacks: CallbackSender;
  metrics: JobMetrics;
  now: () => number;
  /** told of every decision applied (monitoring counts overrides per version) */
  onDecision?: (model: string, version: string, decision: 'approve' | 'amend' | 'reject') => void;
}

/**
 * The clinician review desk: what waits for review, one hold, and decisions applied exactly once. Results under
 * review are never shown to the submitter or called back before a clinician approves them.
 */
export class ReviewService {
  readonly #d: ReviewServiceDeps;

  constructor(deps: ReviewServiceDeps) {
    this.#d = deps;
  }

  /** The service clock (injectable): review ages agree with escalation and the hold-age gauge. */
  now(): number {
    return this.#d.now();
  }

  /**
   * A hold the reviewer may see: one of a model outside the reviewer's `models` is a 404, like an unknown id, so a
   * reviewer scoped to some models learns nothing of the others' patients.
   */
  async reviewItem(principal: Principal, id: string): Promise<JobRecord> {
    const record = /^[0-9a-f-]{36}$/.test(id) ? await this.#d.store.get(id) : undefined;
    if (!record || record.heldAt === undefined || !mayUseModel(principal, record.model)) {
      throw new Problem('not_found', 'no such review');
    }
    return record;
  }

  /** What waits, of `model` (the caller has checked the reviewer may use it) or of every model the reviewer may. */
  async pending(
    principal: Principal,
    model: string | undefined,
    offset: number,
    limit: number,
  ): Promise<{ items: JobRecord[]; total: number }> {
    const models = model !== undefined ? [model] : modelScope(principal);
    const ids = await this.#d.store.pendingReviews(models, offset, limit);
    const records = await Promise.all(ids.map(({ id }) => this.#d.store.get(id)));
    return {
      items: records.filter((r): r is JobRecord => r !== undefined),
      total: await this.#d.store.pendingCount(models),
    };
  }

  /**
   * Applies a clinician's decision exactly once: the state check and the change are one atomic step, so of two
   * reviewers deciding at the same moment one succeeds and the other gets a 409, and a retry changes nothing.
   */
  async decide(
    principal: Principal,
    id: string,
    body: { decision?: unknown; reason?: unknown; output?: unknown },
    model: CatalogModel | undefined,
  ): Promise<JobRecord> {
    const record = await this.reviewItem(principal, id);
    const { decision, reason } = body;
    if (decision !== 'approve' && decision !== 'reject' && decision !== 'amend') {
      throw new Problem('invalid_request', 'decision must be "approve", "reject" or "amend"');
    }
    if (typeof reason !== 'string' || reason.trim().length === 0 || reason.length > MAX_REASON) {
      throw new Problem('invalid_request', `reason is required (1-${MAX_REASON} characters)`);
    }
    onlyFields(body, ['decision', 'reason', 'output']);
    if (decision !== 'amend' && body.output !== undefined) {
      throw new Problem('invalid_request', 'output is only allowed with decision "amend"');
    }
    const amended =
      decision === 'amend' ? validateAmendment(model?.manifest.output, model?.corpus, body.output) : undefined;
    const now = this.#d.now();
    const released = decision !== 'reject';
    const event: CallbackEvent = released ? 'released' : 'rejected';
    const result = await this.#d.store.transition(
      id,
      record.model,
      ['awaiting_review'],
      released ? 'released' : 'rejected',
      {
        now,
        pending: 'rem',
        fields: {
          decisionOutcome: decision,
          decisionBy: principal.id,
          ...(principal.subject !== undefined ? { decisionBySubject: principal.subject } : {}),
          ...(principal.name !== undefined ? { decisionByName: principal.name } : {}),
          decisionReason: reason,
          decisionAt: String(now),
          // stored in the model's own envelope, so a released result reads the same amended or not
          ...(amended !== undefined ? { amendedOutput: JSON.stringify({ predictions: [amended] }) } : {}),
        },
        ...(record.callbackUrl ? { callback: event } : {}),
        audit: {
          ...actorOf(principal),
          action: `review.${decision}`,
          target: id,
          model: record.model,
          version: record.version,
          reason,
        },
      },
    );
    if (!result.ok) {
      if (result.previous === 'released' || result.previous === 'rejected') {
        throw new Problem('already_decided', `this review was already decided (${result.previous})`);
      }
      throw new Problem('invalid_state', `the job is ${result.previous}, not awaiting review`);
    }
    this.#d.metrics.decisions.inc({ model: record.model, outcome: decision });
    this.#d.onDecision?.(record.model, record.version, decision);
    if (decision === 'amend') this.#d.metrics.overrides.inc({ model: record.model });
    this.#d.metrics.jobs.inc({ model: record.model, state: released ? 'released' : 'rejected' });
    if (record.callbackUrl) await this.#d.callbacks.send(id, event);
    await this.#d.store.ensureReplicated(id); // the decision on a replica before the reviewer hears it was applied
    return (await this.#d.store.get(id)) as JobRecord;
  }
}
