import type { AuditLog } from '../platform/audit.ts';
import { Problem } from '../platform/errors.ts';
import type { DeadLetter, DeadLetters } from './dead-letters.ts';

/** Queues a dead letter's event again (the callbacks queue module implements it); `replay` numbers its job. */
export type Requeue = (letter: DeadLetter, replay: number) => Promise<unknown>;

/** The admin's view of callbacks that exhausted their retries, and their replay. */
export class DeadLetterService {
  readonly #letters: DeadLetters;
  readonly #audit: AuditLog;
  readonly #requeue: Requeue;

  constructor(letters: DeadLetters, audit: AuditLog, requeue: Requeue) {
    this.#letters = letters;
    this.#audit = audit;
    this.#requeue = requeue;
  }

  list(): Promise<DeadLetter[]> {
    return this.#letters.list();
  }

  /** Queues the event again, with the same event id (receivers de-duplicate), and audits who replayed it. */
  async replay(eventId: string, actor: { id: string; role: string }): Promise<DeadLetter> {
    const letter = await this.#letters.get(eventId);
    if (!letter) throw new Problem('not_found', 'no dead letter with that event id');
    await this.#requeue(letter, await this.#letters.nextReplay(eventId));
    await this.#letters.remove(eventId);
    await this.#audit.append({ actor: actor.id, role: actor.role, action: 'callback.replay', target: eventId });
    return letter;
  }
}
