import { type AuditEntry, AuditLog } from '../platform/audit.ts';
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
-- KEYS: hold, held index, audit stream; ARGV: run id, new state, audit json, audit cap, then field/value pairs
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {0, ''} end
if state ~= 'held' then return {0, state} end
redis.call('HSET', KEYS[1], 'state', ARGV[2], unpack(ARGV, 5))
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'entry', ARGV[3])
return {1, state}
`;

/**
 * Review holds of batch runs in Redis: `<p>:batch-review:<run id>` (a hash: the hold, then its decision) and
 * `<p>:batch-reviews:held` (what waits, by hold time). Creating a hold and deciding it are each one Lua step with
 * their audit entry, so a decision is applied exactly once and never without its record.
 */
export class RunHoldStore {
  readonly #redis: RedisClient;
  readonly #prefix: string;
  readonly #audit: AuditLog;

  constructor(redis: RedisClient, prefix: string, audit: AuditLog) {
    this.#redis = redis;
    this.#prefix = prefix;
    this.#audit = audit;
  }

  /** Every key of this store is named here. */
  #key(kind: 'hold' | 'held', runId = ''): string {
    return kind === 'hold' ? `${this.#prefix}:batch-review:${runId}` : `${this.#prefix}:batch-reviews:held`;
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
      this.#key('hold', hold.runId),
      this.#key('held'),
      this.#audit.streamKey,
      hold.runId,
      String(hold.heldAt),
      AuditLog.encode(audit, hold.heldAt),
      AuditLog.maxEntries,
      ...Object.entries(fields).flat(),
    );
    return created === 1;
  }

  async get(runId: string): Promise<RunHold | undefined> {
    const h = await this.#redis.hgetall(this.#key('hold', runId));
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
      3,
      this.#key('hold', runId),
      this.#key('held'),
      this.#audit.streamKey,
      runId,
      decision.outcome === 'approve' ? 'approved' : 'rejected',
      AuditLog.encode(audit, decision.at),
      AuditLog.maxEntries,
      ...Object.entries(fields).flat(),
    )) as [number, string];
    return ok === 1 ? { ok: true } : { ok: false, previous: previous as HoldState | '' };
  }

  /** Held runs, oldest first. */
  async held(offset: number, limit: number): Promise<{ ids: string[]; total: number }> {
    const [ids, total] = await Promise.all([
      this.#redis.zrange(this.#key('held'), String(offset), String(offset + limit - 1)),
      this.#redis.zcard(this.#key('held')),
    ]);
    return { ids, total };
  }
}
