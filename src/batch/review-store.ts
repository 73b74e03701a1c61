import { type AuditEntry, AuditLog } from '../platform/audit.ts';
import type { KeySpace } from '../platform/keyspace.ts';
import type { RedisClient } from '../platform/redis.ts';
import type { ReviewHold } from './runs.ts';

export type HoldState = 'held' | 'approved' | 'rejected';

/** A finished run's output held for clinician review, and the one decision on it. */
export interface RunHold {
  runId: string;
  model: string;
  version: string;
  hold: ReviewHold;
  /** `api:<key id>` or `schedule:<id>`, as on the run */
  requestedBy: string;
  state: HoldState;
  heldAt: number;
  /** rows scored, rows at or above the threshold, rows waiting (the whole run, or only those above) */
  scored: number;
  above: number;
  heldRows: number;
  decision?: {
    outcome: 'approve' | 'reject';
    by: string;
    bySubject?: string;
    byName?: string;
    reason: string;
    at: number;
  };
}

const CREATE = `
-- KEYS: hold, held index, audit stream; ARGV: run id, held at, audit json, audit cap, then field/value pairs
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'entry', ARGV[3])
return 1
`;

const DECIDE = `
-- KEYS: hold, held index, audit stream, publication outbox
-- ARGV: run id, new state, audit json, audit cap, then field/value pairs
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, ''} end
if state ~= 'held' then return {0, state} end
redis.call('HSET', KEYS[1], 'state', ARGV[2], unpack(ARGV, 5))
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'entry', ARGV[3])
redis.call('SADD', KEYS[4], ARGV[1])
return {1, state}
`;

/**
 * Review holds of batch runs in Redis, in the run's model shard beside the run: `<shard>:batch-review:<run id>` (a
 * hash: the hold, then its decision) and `<shard>:batch-reviews:held` (what waits, by hold time). Creating a hold and
 * deciding it are each one Lua step with their audit entry in the shard's audit stream (one slot), so a decision is
 * applied exactly once and never without its record. The decision also leaves the run in the shard's publication
 * outbox (`<shard>:batch-reviews:to-publish`): cleared once its publish job is queued, and queued by the maintenance
 * sweep when a process stopped in between (as the callback outbox does for async jobs). A run from before shards (its id names none) keeps its hold
 * under the global tag, with the global audit stream.
 */
export class RunHoldStore {
  readonly #redis: RedisClient;
  readonly #keys: KeySpace;
  readonly #audit: AuditLog;

  constructor(redis: RedisClient, keys: KeySpace, audit: AuditLog) {
    this.#redis = redis;
    this.#keys = keys;
    this.#audit = audit;
  }

  /** Every key of this store is named here: a run's hold, its shard's held index and audit stream. */
  #keysOf(runId: string): [hold: string, held: string, audit: string] {
    const model = this.#keys.modelOfId(runId);
    const tag = this.#tagOf(runId);
    const audit = model === undefined ? this.#audit.streamKey : this.#audit.streamKeyFor(model);
    return [`${tag}:batch-review:${runId}`, this.#heldKey(tag), audit];
  }
  #heldKey(tag: string): string {
    return `${tag}:batch-reviews:held`;
  }
  #outboxKey(tag: string): string {
    return `${tag}:batch-reviews:to-publish`;
  }
  #tagOf(runId: string): string {
    const model = this.#keys.modelOfId(runId);
    return model === undefined ? this.#keys.global : this.#keys.shard(model);
  }

  /** Holds a finished run's output (once: a retried completion finds its hold); true when this call made it. */
  async create(hold: Omit<RunHold, 'state' | 'decision'>, audit: Omit<AuditEntry, 'at'>): Promise<boolean> {
    const fields: Record<string, string> = {
      runId: hold.runId,
      model: hold.model,
      version: hold.version,
      hold: hold.hold,
      requestedBy: hold.requestedBy,
      state: 'held',
      heldAt: String(hold.heldAt),
      scored: String(hold.scored),
      above: String(hold.above),
      heldRows: String(hold.heldRows),
    };
    const created = await this.#redis.eval(
      CREATE,
      3,
      ...this.#keysOf(hold.runId),
      hold.runId,
      String(hold.heldAt),
      AuditLog.encode(audit, hold.heldAt),
      AuditLog.maxEntries,
      ...Object.entries(fields).flat(),
    );
    return created === 1;
  }

  async get(runId: string): Promise<RunHold | undefined> {
    const h = await this.#redis.hgetall(this.#keysOf(runId)[0]);
    if (!h.runId) return undefined;
    return {
      runId: h.runId,
      model: h.model as string,
      version: h.version as string,
      hold: h.hold as ReviewHold,
      requestedBy: h.requestedBy as string,
      state: h.state as HoldState,
      heldAt: Number(h.heldAt),
      scored: Number(h.scored),
      above: Number(h.above),
      heldRows: Number(h.heldRows),
      ...(h.decisionOutcome
        ? {
            decision: {
              outcome: h.decisionOutcome as 'approve' | 'reject',
              by: h.decisionBy as string,
              ...(h.decisionBySubject ? { bySubject: h.decisionBySubject } : {}),
              ...(h.decisionByName ? { byName: h.decisionByName } : {}),
              reason: h.decisionReason as string,
              at: Number(h.decisionAt),
            },
          }
        : {}),
    };
  }

  /** Applies a decision if the run is still held; else says what it was. */
  async decide(
    runId: string,
    decision: NonNullable<RunHold['decision']>,
    audit: Omit<AuditEntry, 'at'>,
  ): Promise<{ ok: true } | { ok: false; previous: HoldState | '' }> {
    const fields: Record<string, string> = {
      decisionOutcome: decision.outcome,
      decisionBy: decision.by,
      ...(decision.bySubject !== undefined ? { decisionBySubject: decision.bySubject } : {}),
      ...(decision.byName !== undefined ? { decisionByName: decision.byName } : {}),
      decisionReason: decision.reason,
      decisionAt: String(decision.at),
    };
    const [ok, previous] = (await this.#redis.eval(
      DECIDE,
      4,
      ...this.#keysOf(runId),
      this.#outboxKey(this.#tagOf(runId)),
      runId,
      decision.outcome === 'approve' ? 'approved' : 'rejected',
      AuditLog.encode(audit, decision.at),
      AuditLog.maxEntries,
      ...Object.entries(fields).flat(),
    )) as [number, string];
    return ok === 1 ? { ok: true } : { ok: false, previous: previous as HoldState | '' };
  }

  /** Decided runs whose publish job may not have been queued yet, from every shard (and the pre-shard tag). */
  async toPublish(): Promise<string[]> {
    const tags = [this.#keys.global, ...this.#keys.shards().map((s) => s.prefix)];
    return (await Promise.all(tags.map((t) => this.#redis.smembers(this.#outboxKey(t))))).flat();
  }

  /** The run's publish job is queued: out of the outbox. */
  async publishQueued(runId: string): Promise<void> {
    await this.#redis.srem(this.#outboxKey(this.#tagOf(runId)), runId);
  }

  /**
   * Held runs, oldest first, merged from the shards (one model's, when named) and the pre-shard index: few runs wait
   * at once (a run is a whole population), so each index is read whole, up to `max`.
   */
  async held(model: string | undefined, max: number): Promise<Array<{ runId: string; heldAt: number }>> {
    const tags = [this.#keys.global, ...(model ? [this.#keys.shard(model)] : this.#keys.shards().map((s) => s.prefix))];
    const pages = await Promise.all(
      tags.map((t) => this.#redis.zrange(this.#heldKey(t), '0', String(max - 1), 'WITHSCORES')),
    );
    const rows: Array<{ runId: string; heldAt: number }> = [];
    for (const flat of pages) {
      for (let i = 0; i < flat.length; i += 2) rows.push({ runId: flat[i] as string, heldAt: Number(flat[i + 1]) });
    }
    return rows.sort((a, b) => a.heldAt - b.heldAt || a.runId.localeCompare(b.runId)).slice(0, max);
  }
}
