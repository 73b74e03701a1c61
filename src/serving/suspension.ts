import type { RedisClient } from '../platform/redis.ts';

/** A kill switch in force: a whole model (no version) or one version scores nothing until resumed. */
export interface Suspension {
  model: string;
  version?: string;
  reason: string;
  by: string;
  at: string;
}

/** Suspensions are stored one hash field each: `model` for a whole model, `model@version` for one version. */
export const suspensionField = (model: string, version?: string) =>
  version === undefined ? model : `${model}@${version}`;

/**
 * The kill switches in force, one Redis hash shared by every replica (read with the catalog's routing): a whole
 * model or one version. Looked up on every scoring, so the usual case (none) costs one size check.
 */
export class Suspensions {
  readonly #redis: RedisClient | undefined;
  readonly #key: string;
  #byField = new Map<string, Suspension>();

  constructor(redis: RedisClient | undefined, prefix: string) {
    this.#redis = redis;
    this.#key = `${prefix}:suspensions`;
  }

  lookup(model: string, version: string): Suspension | undefined {
    if (this.#byField.size === 0) return undefined;
    return this.#byField.get(model) ?? this.#byField.get(suspensionField(model, version));
  }

  /** Every suspension in force here, of one model or all (the whole model first). */
  list(model?: string): Suspension[] {
    return [...this.#byField.values()]
      .filter((s) => model === undefined || s.model === model)
      .sort((a, b) => a.model.localeCompare(b.model) || (a.version ?? '').localeCompare(b.version ?? ''));
  }

  /** Stores a suspension for every replica and applies it here at once; false if that one was already in force. */
  async suspend(s: Suspension): Promise<boolean> {
    const field = suspensionField(s.model, s.version);
    const added = this.#redis ? await this.#redis.hsetnx(this.#key, field, JSON.stringify(s)) : 1;
    if (added === 1) this.#byField.set(field, s);
    else await this.read();
    return added === 1;
  }

  /** Lifts a suspension everywhere; the one lifted (undefined when none was in force). */
  async resume(model: string, version?: string): Promise<Suspension | undefined> {
    const field = suspensionField(model, version);
    await this.read();
    const current = this.#byField.get(field);
    const removed = this.#redis ? await this.#redis.hdel(this.#key, field) : current ? 1 : 0;
    this.#byField.delete(field);
    return removed === 1 ? current : undefined;
  }

  /** Re-reads the suspensions made through any replica. */
  async read(): Promise<void> {
    if (!this.#redis) return;
    const all = await this.#redis.hgetall(this.#key);
    const next = new Map<string, Suspension>();
    for (const [field, raw] of Object.entries(all)) next.set(field, JSON.parse(raw) as Suspension);
    this.#byField = next;
  }
}
