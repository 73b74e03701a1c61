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

/** The audit trail: one Redis stream, append-only, read in order with a cursor. */
export class AuditLog {
  readonly #redis: RedisClient;
  readonly #key: string;

  constructor(redis: RedisClient, prefix: string) {
    this.#redis = redis;
    this.#key = `${prefix}:audit`;
  }

  /**
   * The stream, for a store whose Lua script appends an entry in the same atomic step as its own change (a review
   * decision and its audit entry are one write); such scripts append with `XADD key MAXLEN ~ <max> * entry <json>`.
   */
  get streamKey(): string {
    return this.#key;
  }

  static readonly maxEntries = MAX_ENTRIES;

  /** The stored form of an entry. */
  static encode(entry: Omit<AuditEntry, 'at'>, now: number): string {
    return JSON.stringify({ at: new Date(now).toISOString(), ...entry });
  }

  async append(entry: Omit<AuditEntry, 'at'>, now = Date.now()): Promise<void> {
    await this.#redis.xadd(this.#key, 'MAXLEN', '~', MAX_ENTRIES, '*', 'entry', AuditLog.encode(entry, now));
  }

  /** Entries, oldest first, after the stream id `after` (exclusive). */
  async read(after: string | undefined, limit: number): Promise<Array<{ id: string } & AuditEntry>> {
    const start = after ? `(${after}` : '-';
    const rows = await this.#redis.xrange(this.#key, start, '+', 'COUNT', limit);
    return rows.map(([id, fields]) => ({ id, ...(JSON.parse(fields[1] as string) as AuditEntry) }));
  }
}
