import type { RedisClient } from '../platform/redis.ts';

/** What a callback announces; one event per job at most, its id stable across retries. */
export type CallbackEvent = 'released' | 'rejected' | 'failed';

/**
 * Callbacks recorded and not yet queued. A transition that owes a callback adds its entry in the same atomic step
 * (see `member`); the entry is cleared once the callback job is queued, and a maintenance sweep queues whatever a
 * process that stopped in between left behind.
 */
export class Outbox {
  readonly #redis: RedisClient;
  readonly #key: string;

  constructor(redis: RedisClient, prefix: string) {
    this.#redis = redis;
    this.#key = `${prefix}:callbacks:outbox`;
  }

  /** The set, for a store's Lua script that adds `member(...)` atomically with its own change. */
  get setKey(): string {
    return this.#key;
  }

  static member(jobId: string, event: CallbackEvent): string {
    return `${jobId}|${event}`;
  }

  async pending(): Promise<Array<{ jobId: string; event: CallbackEvent }>> {
    return (await this.#redis.smembers(this.#key)).map((member) => {
      const [jobId, event] = member.split('|') as [string, CallbackEvent];
      return { jobId, event };
    });
  }

  async has(jobId: string, event: CallbackEvent): Promise<boolean> {
    return (await this.#redis.sismember(this.#key, Outbox.member(jobId, event))) === 1;
  }

  size(): Promise<number> {
    return this.#redis.scard(this.#key);
  }

  async clear(jobId: string, event: CallbackEvent): Promise<void> {
    await this.#redis.srem(this.#key, Outbox.member(jobId, event));
  }
}

/** Queues the callback of a recorded transition (the callbacks queue module implements it). */
export interface CallbackSender {
  send(jobId: string, event: CallbackEvent): Promise<void>;
}
