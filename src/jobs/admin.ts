import { Problem } from '../errors.ts';
import { type CallbackPolicy, callbackJobId, type Queues } from './queues.ts';
import type { AuditEntry, JobStore } from './store.ts';

export interface DeadLetterView {
  jobId: string;
  event: 'released' | 'rejected' | 'failed';
  eventId: string;
  error: string;
  attempts: number;
  failedAt: string;
}

/** Admin use cases: the audit trail and the callback dead-letter list. */
export class AdminService {
  readonly #store: JobStore;
  readonly #queues: Queues;
  readonly #policy: CallbackPolicy;

  constructor(store: JobStore, queues: Queues, policy: CallbackPolicy) {
    this.#store = store;
    this.#queues = queues;
    this.#policy = policy;
  }

  get #deadKey(): string {
    return this.#store.key('callbacks', 'dead');
  }

  async deadLetters(): Promise<DeadLetterView[]> {
    const all = await this.#store.redis.hgetall(this.#deadKey);
    return Object.values(all)
      .map((v) => JSON.parse(v) as DeadLetterView)
      .sort((a, b) => a.failedAt.localeCompare(b.failedAt));
  }

  /** Queues the event again, with the same event id (receivers de-duplicate), and audits who replayed it. */
  async replay(eventId: string, actor: { id: string; role: string }): Promise<DeadLetterView> {
    const raw = await this.#store.redis.hget(this.#deadKey, eventId);
    if (!raw) throw new Problem('not_found', 'no dead letter with that event id');
    const letter = JSON.parse(raw) as DeadLetterView;
    const replay = await this.#store.redis.hincrby(this.#store.key('callbacks', 'replays'), eventId, 1);
    await this.#queues.callbacks.add(
      'deliver',
      { jobId: letter.jobId, event: letter.event, eventId },
      {
        jobId: callbackJobId(letter.jobId, letter.event, replay),
        attempts: this.#policy.attempts,
        backoff: { type: 'exponential', delay: this.#policy.backoffMs, jitter: 0.5 },
        removeOnComplete: { age: 7 * 24 * 3600 },
        removeOnFail: { age: 30 * 24 * 3600 },
      },
    );
    await this.#store.redis.hdel(this.#deadKey, eventId);
    await this.#store.appendAudit({ actor: actor.id, role: actor.role, action: 'callback.replay', target: eventId });
    return letter;
  }

  async recordReload(actor: { id: string; role: string }, models: string[]): Promise<void> {
    await this.#store.appendAudit({
      actor: actor.id,
      role: actor.role,
      action: 'manifests.reload',
      target: 'models',
      detail: models.join(','),
    });
  }

  audit(after: string | undefined, limit: number): Promise<Array<{ id: string } & AuditEntry>> {
    return this.#store.readAudit(after, limit);
  }
}
