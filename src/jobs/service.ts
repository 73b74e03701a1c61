import { checkCallbackUrl } from '../callbacks/url-policy.ts';
import type { Principal } from '../platform/auth.ts';
import { Problem } from '../platform/errors.ts';
import type { JobMetrics } from '../platform/metrics.ts';
import type { Manifest } from '../registry/schema.ts';
import type { CatalogModel } from '../serving/catalog.ts';
import { documentId } from '../serving/documents.ts';
import { prepareInput } from '../serving/inputs.ts';
import type { Correlation, JobRecord, JobStore } from './store.ts';

const IDEMPOTENCY_KEY = /^[A-Za-z0-9._:-]{1,128}$/;
const REFERENCE = /^[\x20-\x7e]{1,256}$/;

/** Who may see a job (and report its outcome): the client that submitted it, or an admin. */
export function mayReadJob(principal: Principal, record: JobRecord): boolean {
  return principal.role === 'admin' || record.client === principal.id;
}

/** Where accepted jobs wait for a worker (the inference queue module implements it). */
export interface JobQueue {
  /**
   * Queues a job. Must send on the job store's connection, and before its first await, so a job queued right after
   * its record reaches Redis behind it (the composition root gives both the one connection).
   */
  enqueue(jobId: string, manifest: Manifest): Promise<void>;
  /** withdraws a job no worker has taken yet */
  remove(jobId: string): Promise<void>;
}

export interface JobServiceDeps {
  store: JobStore;
  queue: JobQueue;
  /** hosts allowed over plain http for callbacks */
  callbackHttpHosts: readonly string[];
  metrics: JobMetrics;
  now: () => number;
}

/**
 * The async tier's use cases, for the routes: submit (idempotent), status and cancel. Results under review are never
 * shown: a job's result appears only once released.
 */
export class JobService {
  readonly #d: JobServiceDeps;

  constructor(deps: JobServiceDeps) {
    this.#d = deps;
  }

  async submit(
    principal: Principal,
    model: CatalogModel,
    body: { input?: unknown; callbackUrl?: unknown; idempotencyKey?: unknown; reference?: unknown },
    baseUrl?: string,
  ): Promise<{ id: string; created: boolean; createdAt: number }> {
    const { manifest } = model;
    if (body.input === undefined) throw new Problem('invalid_request', '"input" is required');
    prepareInput(manifest, body.input); // bad input is refused here, never queued
    const callbackUrl =
      body.callbackUrl === undefined || body.callbackUrl === null
        ? undefined
        : checkCallbackUrl(body.callbackUrl, principal.callbackHosts, this.#d.callbackHttpHosts).toString();
    let idempotencyKey: string | undefined;
    if (body.idempotencyKey !== undefined) {
      if (typeof body.idempotencyKey !== 'string' || !IDEMPOTENCY_KEY.test(body.idempotencyKey)) {
        throw new Problem('invalid_request', 'idempotencyKey must be 1-128 of letters, digits, . _ : -');
      }
      idempotencyKey = body.idempotencyKey;
    }
    if (body.reference !== undefined && (typeof body.reference !== 'string' || !REFERENCE.test(body.reference))) {
      throw new Problem('invalid_request', 'reference must be 1-256 printable characters');
    }
    const documentRef = manifest.input === 'document' ? documentId(body.input) : undefined;
    const correlation: Correlation = {
      ...(idempotencyKey !== undefined ? { idempotencyKey } : {}),
      ...(documentRef !== undefined ? { documentId: documentRef } : {}),
      ...(typeof body.reference === 'string' ? { reference: body.reference } : {}),
    };
    const createdAt = this.#d.now();
    const id = this.#d.store.newId(manifest.name);
    const creating = this.#d.store.create({
      id,
      model: manifest.name,
      version: model.version,
      client: principal.id,
      payload: body.input,
      ...(callbackUrl ? { callbackUrl } : {}),
      ...(idempotencyKey ? { idempotencyKey } : {}),
      correlation,
      ...(baseUrl ? { baseUrl } : {}),
      now: createdAt,
    });
    // One round trip for the record and the queue: without an idempotency key the record is always this new job's,
    // so the job is queued at once, right behind its record on the same connection (a worker never takes a job
    // whose record Redis has not stored). With a key the record may be an earlier job's: queued once it is known.
    const queuing = idempotencyKey === undefined ? this.#d.queue.enqueue(id, manifest) : undefined;
    const [result] = await Promise.all([creating, queuing]);
    if (!result.sameRequest) {
      throw new Problem('idempotency_conflict', 'this idempotencyKey was already used for a different request', {
        extensions: { jobId: result.id },
      });
    }
    if (!queuing) await this.#d.queue.enqueue(result.id, manifest); // idempotent: a retry after a crash queues it once
    await this.#d.store.ensureReplicated(result.id); // the record and its queue entry on a replica before the 202
    if (result.created) this.#d.metrics.jobs.inc({ model: manifest.name, state: 'queued' });
    return { ...result, createdAt };
  }

  /** The caller's own job; another client's id is indistinguishable from an unknown one. */
  async ownJob(principal: Principal, id: string): Promise<JobRecord> {
    const record = /^[0-9a-f-]{36}$/.test(id) ? await this.#d.store.get(id) : undefined;
    if (!record || !mayReadJob(principal, record)) throw new Problem('not_found', 'no such job');
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
    await this.#d.queue.remove(id); // a running job finds itself cancelled and stops
    this.#d.metrics.jobs.inc({ model: record.model, state: 'cancelled' });
    return (await this.#d.store.get(id)) as JobRecord;
  }
}
