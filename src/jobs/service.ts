import type { Redis } from 'ioredis';
import { checkCallbackUrl } from '../callbacks/url-policy.ts';
import type { Principal } from '../platform/auth.ts';
import { Problem } from '../platform/errors.ts';
import { onlyFields } from '../platform/json-body.ts';
import type { JobMetrics } from '../platform/metrics.ts';
import { prepareInput } from '../serving/inputs.ts';
import type { ServedModel } from '../sync/service.ts';
import { type CallbackPolicy, enqueueCallback, type Queues } from './queues.ts';
import type { CallbackEvent, JobRecord, JobStore } from './store.ts';

const IDEMPOTENCY_KEY = /^[A-Za-z0-9._:-]{1,128}$/;
const MAX_REASON = 2000;

export interface JobServiceDeps {
  store: JobStore;
  queues: Queues;
  redis: Redis;
  callbacks: CallbackPolicy;
  metrics: JobMetrics;
  now: () => number;
}

/**
 * The async tier's use cases, for the routes: submit (idempotent), status, cancel, and the clinician review queue.
 * Results under review are never shown: a job's result appears only once released.
 */
export class JobService {
  readonly #d: JobServiceDeps;

  constructor(deps: JobServiceDeps) {
    this.#d = deps;
  }

  async submit(
    principal: Principal,
    model: ServedModel,
    body: { input?: unknown; callbackUrl?: unknown; idempotencyKey?: unknown },
  ): Promise<{ id: string; created: boolean; createdAt: number }> {
    const { manifest } = model;
    if (body.input === undefined) throw new Problem('invalid_request', '"input" is required');
    prepareInput(manifest, body.input); // bad input is refused here, never queued
    const callbackUrl =
      body.callbackUrl === undefined || body.callbackUrl === null
        ? undefined
        : checkCallbackUrl(body.callbackUrl, principal.callbackHosts, this.#d.callbacks.httpHosts).toString();
    let idempotencyKey: string | undefined;
    if (body.idempotencyKey !== undefined) {
      if (typeof body.idempotencyKey !== 'string' || !IDEMPOTENCY_KEY.test(body.idempotencyKey)) {
        throw new Problem('invalid_request', 'idempotencyKey must be 1-128 of letters, digits, . _ : -');
      }
      idempotencyKey = body.idempotencyKey;
    }
    const createdAt = this.#d.now();
    const result = await this.#d.store.create({
      model: manifest.name,
      version: model.version,
      client: principal.id,
      payload: body.input,
      ...(callbackUrl ? { callbackUrl } : {}),
      ...(idempotencyKey ? { idempotencyKey } : {}),
      now: createdAt,
    });
    if (!result.sameRequest) {
      throw new Problem('idempotency_conflict', 'this idempotencyKey was already used for a different request', {
        extensions: { jobId: result.id },
      });
    }
    // Adding is idempotent (the BullMQ job id is ours), so a retried submission after a crash between the record
    // and the queue still gets its job queued, once.
    await this.#d.queues.inference.add(
      'infer',
      { jobId: result.id },
      {
        jobId: result.id,
        attempts: manifest.async?.attempts ?? 3,
        backoff: { type: 'exponential', delay: 1000, jitter: 0.5 },
        removeOnComplete: { age: 24 * 3600 },
        removeOnFail: { age: 7 * 24 * 3600 },
      },
    );
    if (result.created) this.#d.metrics.jobs.inc({ model: manifest.name, state: 'queued' });
    return { ...result, createdAt };
  }

  /** The service clock (injectable): review ages agree with escalation and the hold-age gauge. */
  now(): number {
    return this.#d.now();
  }

  /** The caller's own job; another client's id is indistinguishable from an unknown one. */
  async ownJob(principal: Principal, id: string): Promise<JobRecord> {
    const record = /^[0-9a-f-]{36}$/.test(id) ? await this.#d.store.get(id) : undefined;
    if (!record || (principal.role !== 'admin' && record.client !== principal.id)) {
      throw new Problem('not_found', 'no such job');
    }
    return record;
  }

  async cancel(principal: Principal, id: string): Promise<JobRecord> {
    const record = await this.ownJob(principal, id);
    const result = await this.#d.store.transition(
      id,
      record.model,
      ['queued', 'running', 'awaiting_review'],
      'cancelled',
      {
        now: this.#d.now(),
        pending: 'rem',
        audit: { actor: principal.id, role: principal.role, action: 'job.cancel', target: id, model: record.model },
      },
    );
    if (!result.ok) {
      throw new Problem('invalid_state', `the job is ${result.previous} and can no longer be cancelled`);
    }
    await this.#d.queues.inference.remove(id).catch(() => 0); // a running job finds itself cancelled and stops
    this.#d.metrics.jobs.inc({ model: record.model, state: 'cancelled' });
    return (await this.#d.store.get(id)) as JobRecord;
  }

  async reviewItem(id: string): Promise<JobRecord> {
    const record = /^[0-9a-f-]{36}$/.test(id) ? await this.#d.store.get(id) : undefined;
    if (!record || record.heldAt === undefined) throw new Problem('not_found', 'no such review');
    return record;
  }

  async pending(
    model: string | undefined,
    offset: number,
    limit: number,
  ): Promise<{ items: JobRecord[]; total: number }> {
    const ids = await this.#d.store.pendingReviews(model, offset, limit);
    const records = await Promise.all(ids.map(({ id }) => this.#d.store.get(id)));
    return {
      items: records.filter((r): r is JobRecord => r !== undefined),
      total: await this.#d.store.pendingCount(model),
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
    model: ServedModel | undefined,
  ): Promise<JobRecord> {
    const record = await this.reviewItem(id);
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
    const amended = decision === 'amend' ? validateAmendment(model, body.output) : undefined;
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
          decisionReason: reason,
          decisionAt: String(now),
          ...(amended !== undefined ? { amendedOutput: JSON.stringify(amended) } : {}),
        },
        ...(record.callbackUrl ? { callback: event } : {}),
        audit: {
          actor: principal.id,
          role: principal.role,
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
    if (decision === 'amend') this.#d.metrics.overrides.inc({ model: record.model });
    this.#d.metrics.jobs.inc({ model: record.model, state: released ? 'released' : 'rejected' });
    if (record.callbackUrl) {
      await enqueueCallback(this.#d.queues, this.#d.redis, this.#d.store.outboxKey, this.#d.callbacks, id, event);
    }
    return (await this.#d.store.get(id)) as JobRecord;
  }
}

/** An amended output must have the model's output shape: a known category, or matches from the corpus. */
function validateAmendment(model: ServedModel | undefined, output: unknown): unknown {
  const refuse = (detail: string): never => {
    throw new Problem('invalid_request', `output: ${detail}`);
  };
  if (typeof output !== 'object' || output === null || Array.isArray(output)) {
    return refuse('an amended output object is required');
  }
  if (JSON.stringify(output).length > 64 * 1024) refuse('too large');
  const spec = model?.manifest.output;
  if (spec?.kind === 'classification') {
    const category = (output as { category?: unknown }).category;
    if (typeof category !== 'string' || !spec.labels.includes(category)) {
      refuse(`category must be one of ${spec.labels.join(', ')}`);
    }
    return { category };
  }
  if (spec?.kind === 'retrieval') {
    const matches = (output as { matches?: unknown }).matches;
    const known = new Set(model?.corpus?.map((e) => e.id));
    if (!Array.isArray(matches) || matches.some((m) => typeof m?.id !== 'string' || !known.has(m.id))) {
      refuse('matches must be an array of {id} from the reference corpus');
    }
    return { matches: (matches as Array<{ id: string }>).map((m) => ({ id: m.id })) };
  }
  return output;
}
