import { Problem } from '../platform/errors.ts';
import { type CallbackPolicy, callbackJobId, callbackJobOptions, type Queues } from './queues.ts';
import type { AuditEntry, DeadLetter, JobStore } from './store.ts';

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

  async deadLetters(): Promise<DeadLetter[]> {
    const all = await this.#store.redis.hgetall(this.#store.deadLettersKey);
    return Object.values(all)
      .map((v) => JSON.parse(v) as DeadLetter)
      .sort((a, b) => a.failedAt.localeCompare(b.failedAt));
  }

  /** Queues the event again, with the same event id (receivers de-duplicate), and audits who replayed it. */
  async replay(eventId: string, actor: { id: string; role: string }): Promise<DeadLetter> {
    const raw = await this.#store.redis.hget(this.#store.deadLettersKey, eventId);
    if (!raw) throw new Problem('not_found', 'no dead letter with that event id');
    const letter = JSON.parse(raw) as DeadLetter;
    const replay = await this.#store.redis.hincrby(this.#store.key('callbacks', 'replays'), eventId, 1);
    await this.#queues.callbacks.add(
      'deliver',
      { jobId: letter.jobId, event: letter.event, eventId },
      callbackJobOptions(this.#policy, callbackJobId(letter.jobId, letter.event, replay)),
    );
    await this.#store.redis.hdel(this.#store.deadLettersKey, eventId);
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
