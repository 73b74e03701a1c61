import type { KeySpace } from '../platform/keyspace.ts';
import type { RedisClient } from '../platform/redis.ts';
import type { CallbackEvent } from './outbox.ts';

/** A callback that exhausted its attempts: kept for an admin to see and replay with the same event id. */
export interface DeadLetter {
  jobId: string;
  event: CallbackEvent;
  eventId: string;
  error: string;
  attempts: number;
  failedAt: string;
}

/**
 * Callbacks that exhausted their retries, by event id, and how often each was replayed: kept in the shard of the
 * job's model (the event id names the job, whose id names its shard); the admin's list is merged from the shards.
 */
export class DeadLetters {
  readonly #redis: RedisClient;
  readonly #keys: KeySpace;

  constructor(redis: RedisClient, keys: KeySpace) {
    this.#redis = redis;
    this.#keys = keys;
  }

  #key(model: string, part: 'dead' | 'replays'): string {
    return `${this.#keys.shard(model)}:callbacks:${part}`;
  }

  /** The shard's key for an event or job id ('' for an id that is not ours: an empty key name holds nothing). */
  #keyOf(id: string, part: 'dead' | 'replays'): string {
    const model = this.#keys.modelOfId(id);
    return model === undefined ? '' : this.#key(model, part);
  }

  async put(letter: DeadLetter): Promise<void> {
    await this.#redis.hset(this.#keyOf(letter.jobId, 'dead'), letter.eventId, JSON.stringify(letter));
  }

  async get(eventId: string): Promise<DeadLetter | undefined> {
    const raw = await this.#redis.hget(this.#keyOf(eventId, 'dead'), eventId);
    return raw ? (JSON.parse(raw) as DeadLetter) : undefined;
  }

  /** Oldest first, across the shards. */
  async list(): Promise<DeadLetter[]> {
    const shards = await Promise.all(
      this.#keys.shards().map(({ model }) => this.#redis.hgetall(this.#key(model, 'dead'))),
    );
    return shards
      .flatMap((h) => Object.values(h))
      .map((v) => JSON.parse(v) as DeadLetter)
      .sort((a, b) => a.failedAt.localeCompare(b.failedAt) || a.eventId.localeCompare(b.eventId));
  }

  /** Counts a replay of the event: the replay's number (1, 2, …) names its callback job. */
  nextReplay(eventId: string): Promise<number> {
    return this.#redis.hincrby(this.#keyOf(eventId, 'replays'), eventId, 1);
  }

  async remove(eventId: string): Promise<void> {
    await this.#redis.hdel(this.#keyOf(eventId, 'dead'), eventId);
  }
}
