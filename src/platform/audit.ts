import type { KeySpace } from './keyspace.ts';
import type { RedisClient } from './redis.ts';

/** Who did what, when and why: every hold, release, decision, cancellation, replay, schedule and routing change. */
export interface AuditEntry {
  at: string;
  actor: string;
  /** the named person behind a bearer token */
  actorSubject?: string;
  actorName?: string;
  role: string;
  action: string;
  target: string;
  model?: string;
  version?: string;
  reason?: string;
  detail?: string;
}

/** Entries kept (approximately) before the oldest are trimmed. */
const MAX_ENTRIES = '1000000';

/**
 * The audit trail: append-only Redis streams read in order with a cursor. Job transitions append to their model
 * shard's stream (in the same atomic step as the change, so on one slot); everything else (releases, routing,
 * schedules, replays) to the global stream, which stays on one slot: those are rare admin acts, never on a
 * per-prediction path, so one primary carries them for any load. A read merges the streams by entry id.
 */
export class AuditLog {
  readonly #redis: RedisClient;
  readonly #key: string;
  readonly #keys: KeySpace;

  constructor(redis: RedisClient, keys: KeySpace) {
    this.#redis = redis;
    this.#keys = keys;
    this.#key = `${keys.global}:audit`;
  }

  /** The global stream, for a script whose keys live under the global tag (review holds of runs from before shards). */
  get streamKey(): string {
    return this.#key;
  }

  /**
   * A model shard's stream, for a store whose Lua script appends an entry in the same atomic step as its own change
   * (a review decision and its audit entry are one write); such scripts append with
   * `XADD key MAXLEN ~ <max> * entry <json>`.
   */
  streamKeyFor(model: string): string {
    return `${this.#keys.shard(model)}:audit`;
  }

  static readonly maxEntries = MAX_ENTRIES;

  /** The stored form of an entry. */
  static encode(entry: Omit<AuditEntry, 'at'>, now: number): string {
    return JSON.stringify({ at: new Date(now).toISOString(), ...entry });
  }

  async append(entry: Omit<AuditEntry, 'at'>, now = Date.now()): Promise<void> {
    await this.#redis.xadd(this.#key, 'MAXLEN', '~', MAX_ENTRIES, '*', 'entry', AuditLog.encode(entry, now));
  }

  /** Appends to a model shard's stream: an act on one of the model's records (a batch run's submission, its cancel). */
  async appendFor(model: string, entry: Omit<AuditEntry, 'at'>, now = Date.now()): Promise<void> {
    const encoded = AuditLog.encode({ ...entry, model }, now);
    await this.#redis.xadd(this.streamKeyFor(model), 'MAXLEN', '~', MAX_ENTRIES, '*', 'entry', encoded);
  }

  /**
   * Entries, oldest first, after the stream id `after` (exclusive), merged from the global and every shard's stream.
   * Two streams can give the same id to entries of the same millisecond: a page never ends between equal ids (it
   * takes them all), so the next page's `after` skips none.
   */
  async read(after: string | undefined, limit: number): Promise<Array<{ id: string } & AuditEntry>> {
    const start = after ? `(${after}` : '-';
    const keys = [this.#key, ...this.#keys.shards().map(({ model }) => this.streamKeyFor(model))];
    // one more than asked of each stream: enough to see whether equal ids follow the page's last
    const streams = await Promise.all(keys.map((k) => this.#redis.xrange(k, start, '+', 'COUNT', limit + 1)));
    const rows = streams.flat().sort(([a], [b]) => compareIds(a, b));
    let end = Math.min(limit, rows.length);
    while (end > 0 && end < rows.length && compareIds(rows[end]?.[0] as string, rows[end - 1]?.[0] as string) === 0)
      end++;
    return rows.slice(0, end).map(([id, fields]) => ({ id, ...(JSON.parse(fields[1] as string) as AuditEntry) }));
  }
}

/** Orders stream ids (`<ms>-<seq>`) numerically. */
function compareIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(BigInt) as [bigint, bigint];
  const [bm, bs] = b.split('-').map(BigInt) as [bigint, bigint];
  return am === bm ? (as === bs ? 0 : as < bs ? -1 : 1) : am < bm ? -1 : 1;
}
