import type { KeySpace } from '../platform/keyspace.ts';
import type { RedisClient } from '../platform/redis.ts';

/** What a callback announces; one event per job at most, its id stable across retries. */
export type CallbackEvent = 'released' | 'rejected' | 'failed';

/**
 * Callbacks recorded and not yet queued. A transition that owes a callback adds its entry in the same atomic step
 * (see `member`); the entry is cleared once the callback job is queued, and a maintenance sweep queues whatever a
 * process that stopped in between left behind. One set per model shard (the transition's script writes it with the
 * job record, on one slot).
 */
export class Outbox {
  readonly #redis: RedisClient;
  readonly #keys: KeySpace;

  constructor(redis: RedisClient, keys: KeySpace) {
    this.#redis = redis;
    this.#keys = keys;
  }

  /** The model's set, for a store's Lua script that adds `member(...)` atomically with its own change. */
  keyFor(model: string): string {
    return `${this.#keys.shard(model)}:callbacks:outbox`;
  }

  /** The set of the shard a job id names ('' for an id that is not ours: an empty key name holds nothing). */
  #keyOf(jobId: string): string {
    const model = this.#keys.modelOfId(jobId);
    return model === undefined ? '' : this.keyFor(model);
  }

  static member(jobId: string, event: CallbackEvent): string {
    return `${jobId}|${event}`;
  }

  /** Every shard's entries. */
  async pending(): Promise<Array<{ jobId: string; event: CallbackEvent }>> {
    const sets = await Promise.all(this.#keys.shards().map(({ model }) => this.#redis.smembers(this.keyFor(model))));
    return sets.flat().map((member) => {
      const [jobId, event] = member.split('|') as [string, CallbackEvent];
      return { jobId, event };
    });
  }

  async has(jobId: string, event: CallbackEvent): Promise<boolean> {
    return (await this.#redis.sismember(this.#keyOf(jobId), Outbox.member(jobId, event))) === 1;
  }

  async size(): Promise<number> {
    const sizes = await Promise.all(this.#keys.shards().map(({ model }) => this.#redis.scard(this.keyFor(model))));
    return sizes.reduce((a, b) => a + b, 0);
  }

  async clear(jobId: string, event: CallbackEvent): Promise<void> {
    await this.#redis.srem(this.#keyOf(jobId), Outbox.member(jobId, event));
  }
}

/** Queues the callback of a recorded transition (the callbacks queue module implements it). */
export interface CallbackSender {
  send(jobId: string, event: CallbackEvent): Promise<void>;
}
