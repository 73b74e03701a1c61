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

/** Callbacks that exhausted their retries, by event id, and how often each was replayed. */
export class DeadLetters {
  readonly #redis: RedisClient;
  readonly #key: string;
  readonly #replaysKey: string;

  constructor(redis: RedisClient, prefix: string) {
    this.#redis = redis;
    this.#key = `${prefix}:callbacks:dead`;
    this.#replaysKey = `${prefix}:callbacks:replays`;
  }

  async put(letter: DeadLetter): Promise<void> {
    await this.#redis.hset(this.#key, letter.eventId, JSON.stringify(letter));
  }

  async get(eventId: string): Promise<DeadLetter | undefined> {
    const raw = await this.#redis.hget(this.#key, eventId);
    return raw ? (JSON.parse(raw) as DeadLetter) : undefined;
  }

  /** Oldest first. */
  async list(): Promise<DeadLetter[]> {
    return Object.values(await this.#redis.hgetall(this.#key))
      .map((v) => JSON.parse(v) as DeadLetter)
      .sort((a, b) => a.failedAt.localeCompare(b.failedAt));
  }

  /** Counts a replay of the event: the replay's number (1, 2, …) names its callback job. */
  nextReplay(eventId: string): Promise<number> {
    return this.#redis.hincrby(this.#replaysKey, eventId, 1);
  }

  async remove(eventId: string): Promise<void> {
    await this.#redis.hdel(this.#key, eventId);
  }
}
