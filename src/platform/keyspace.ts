import { createHash, randomUUID } from 'node:crypto';
import type { RedisClient } from './redis.ts';

/**
 * The one place that names Redis keys by shard. Redis Cluster places a key by the hash tag in braces, so:
 * - a model's own state (job records, idempotency keys, review index, its queues, callback outbox, the audit entries
 *   its transitions write, batch runs) lives under the model's tag `{<base>:<model>}`: every multi-key script touches
 *   one slot, and different models land on different primaries;
 * - state that belongs to no model (routing, schedules, API-change audit, rate limits, CDS cards) stays under the
 *   global tag `{<base>}`, one slot, as before.
 *
 * Records reached by id alone (`GET /v1/jobs/{id}`, a review decision, a callback job) find their shard from the id:
 * `newId(model)` writes the model's 32-bit shard mark into the first 8 hex digits of a UUID, and `modelOfId` reads
 * it back against the models this process knows (a collision between two known models is refused at start).
 * On a single Redis the same names are used; the tags then only group keys.
 *
 * The shards are remembered in Redis (`{<base>}:shards`): a model a deploy removed keeps its shard, so its queued jobs
 * are still consumed (and failed, "no longer served") and its records still found by id; a model a reload adds is
 * announced there before it serves, and other processes learn it (`refresh`) without a restart.
 */
export class KeySpace {
  /** the global tag, e.g. `{triage}` (TRIAGE_REDIS_PREFIX) */
  readonly global: string;
  readonly #base: string;
  readonly #byMark = new Map<string, string>();

  constructor(prefix: string, models: Iterable<string> = []) {
    this.global = prefix;
    const tag = /^\{([^{}]+)\}$/.exec(prefix);
    this.#base = tag ? (tag[1] as string) : prefix;
    for (const m of models) this.register(m);
  }

  /** The key space of these models and of every model a process of this deployment ever served. */
  static async open(redis: RedisClient, prefix: string, models: readonly string[]): Promise<KeySpace> {
    const keys = new KeySpace(prefix, models);
    await keys.announce(redis, models);
    await keys.refresh(redis);
    return keys;
  }

  /** Records these models' shards for every process of the deployment (at start, and before a reload adds one). */
  async announce(redis: RedisClient, models: readonly string[]): Promise<void> {
    for (const m of models) this.register(m);
    if (models.length > 0) await redis.sadd(this.#known, ...models);
  }

  /** Learns the shards other processes announced (a model a reload added there); returns the models new here. */
  async refresh(redis: RedisClient): Promise<string[]> {
    const learned: string[] = [];
    for (const model of await redis.smembers(this.#known)) {
      if (this.#byMark.get(shardMark(model)) === model) continue;
      this.register(model);
      learned.push(model);
    }
    return learned;
  }

  get #known(): string {
    return `${this.global}:shards`;
  }

  /** Whether the prefix is one hash tag (Redis Cluster needs it: BullMQ's scripts and ours span several keys). */
  get tagged(): boolean {
    return this.#base !== this.global;
  }

  /** The model's shard prefix, e.g. `{triage:news2}`. */
  shard(model: string): string {
    return `{${this.#base}:${model}}`;
  }

  /** SCAN patterns that match every key of this deployment: the global tag's and every model shard's (clean-up). */
  patterns(): string[] {
    const glob = (s: string) => s.replace(/[*?[\]\\]/g, '\\$&');
    return [`${glob(this.global)}:*`, ...(this.tagged ? [`{${glob(this.#base)}:*}:*`] : [])];
  }

  /** Every shard prefix this process knows, by model. */
  shards(): Array<{ model: string; prefix: string }> {
    return [...this.#byMark.values()].sort().map((model) => ({ model, prefix: this.shard(model) }));
  }

  /** Makes a model's id resolvable (models added by a reload included). */
  register(model: string): void {
    const mark = shardMark(model);
    const known = this.#byMark.get(mark);
    if (known !== undefined && known !== model) {
      throw new Error(`models ${known} and ${model} share a shard mark: rename one`);
    }
    this.#byMark.set(mark, model);
  }

  /** A new record id (a UUID's shape) that names the model's shard. */
  newId(model: string): string {
    this.register(model);
    return `${shardMark(model)}${randomUUID().slice(8)}`;
  }

  /**
   * The id of a record named by its origin rather than drawn at random (a scheduled slot's run: `<schedule>:<slot>`),
   * in `newId`'s shape: the same name always gives the same id, so a slot fired twice finds its one run.
   */
  idFor(model: string, name: string): string {
    this.register(model);
    const h = createHash('sha256').update(`${model}\0${name}`).digest('hex');
    return `${shardMark(model)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
  }

  /**
   * The model whose shard holds the record `id` (undefined when the id names no model known here). The id may sit
   * inside a longer name (a callback's queue job `cb-<id>-released`, an event id `evt-<id>-…`).
   */
  modelOfId(id: string): string | undefined {
    const m = /(?:^|-)([0-9a-f]{8})-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?:$|-)/.exec(id);
    return m ? this.#byMark.get(m[1] as string) : undefined;
  }

  /** The shard prefix of a record id, or undefined. */
  shardOfId(id: string): string | undefined {
    const model = this.modelOfId(id);
    return model === undefined ? undefined : this.shard(model);
  }
}

function shardMark(model: string): string {
  return createHash('sha256').update(model).digest('hex').slice(0, 8);
}
