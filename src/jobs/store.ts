import { createHash } from 'node:crypto';
import { type CallbackEvent, Outbox } from '../callbacks/outbox.ts';
import { type AuditEntry, AuditLog } from '../platform/audit.ts';
import { Problem } from '../platform/errors.ts';
import { hashedKeyPart } from '../platform/key-names.ts';
import type { KeySpace } from '../platform/keyspace.ts';
import type { RedisClient } from '../platform/redis.ts';
import { CLAIM, CREATE, TRANSITION } from './store-scripts.ts';

/**
 * Async job records and their state machine, in Redis (the gateway keeps no state of its own). Every transition is
 * one Lua script: compare the state, set the new one, and apply its side effects (review index, callback outbox,
 * audit entry) atomically, so a decision is applied once whatever the retries and races.
 *
 *   queued → running → awaiting_review → released | rejected
 *                    ↘ released (no hold)     any unfinished → cancelled;  running → failed
 */
export const jobStates = [
  'queued',
  'running',
  'awaiting_review',
  'released',
  'rejected',
  'failed',
  'cancelled',
] as const;
export type JobState = (typeof jobStates)[number];

export interface JobRecord {
  id: string;
  model: string;
  version: string;
  client: string;
  state: JobState;
  /** the submitted input (JSON): stays in Redis, never in logs */
  input: unknown;
  output?: unknown;
  amendedOutput?: unknown;
  callbackUrl?: string;
  /** the caller's own handles on the job, returned in its callbacks */
  correlation?: Correlation;
  /** the gateway's base URL as the caller reached it: callbacks carry absolute URLs */
  baseUrl?: string;
  createdAt: number;
  updatedAt: number;
  heldAt?: number;
  holdReason?: string;
  escalated: boolean;
  decision?: {
    outcome: 'approve' | 'reject' | 'amend';
    by: string;
    /** the named person behind a bearer token */
    bySubject?: string;
    byName?: string;
    reason: string;
    at: number;
  };
  error?: string;
  attempts: number;
}

export interface Correlation {
  idempotencyKey?: string;
  /** the id of the DocumentReference submitted */
  documentId?: string;
  /** the caller's reference (an order or encounter number of theirs) */
  reference?: string;
}

export interface TransitionResult {
  ok: boolean;
  /** the state before the attempt ('' when the job does not exist) */
  previous: JobState | '';
}

export class JobStore {
  readonly #redis: RedisClient;
  readonly #keys: KeySpace;
  readonly #audit: AuditLog;
  readonly #outbox: Outbox;
  readonly #idempotencyTtlSeconds: number;
  readonly #replicaAcks: number;
  readonly #options: ConstructorParameters<typeof JobStore>[2];

  constructor(
    redis: RedisClient,
    keys: KeySpace,
    options: { audit: AuditLog; outbox: Outbox; idempotencyTtlSeconds?: number; replicaAcks?: number },
  ) {
    this.#redis = redis;
    this.#keys = keys;
    this.#audit = options.audit;
    this.#outbox = options.outbox;
    this.#idempotencyTtlSeconds = options.idempotencyTtlSeconds ?? 7 * 24 * 3600;
    this.#replicaAcks = options.replicaAcks ?? 0;
    this.#options = options;
    if (!('triageTransition' in redis)) {
      redis.defineCommand('triageTransition', { numberOfKeys: 5, lua: TRANSITION });
      redis.defineCommand('triageCreate', { numberOfKeys: 2, lua: CREATE });
      redis.defineCommand('triageClaim', { numberOfKeys: 1, lua: CLAIM });
    }
  }

  /**
   * The same store over another connection. Redis runs one connection's commands in the order sent, so a worker that
   * writes a job's hold or release on BullMQ's own connection has BullMQ's completion of the job run after it, and
   * can send both without waiting between them (workers/inference.ts).
   */
  on(redis: RedisClient): JobStore {
    return new JobStore(redis, this.#keys, this.#options);
  }

  /** A key in the model's shard (all of a job's keys live in its model's shard: one slot on Redis Cluster). */
  #key(model: string, ...parts: string[]): string {
    return [this.#keys.shard(model), ...parts].join(':');
  }
  /** The job record's key, found from the id (which names its shard); undefined for an id that is not ours. */
  #jobKey(id: string): string | undefined {
    const model = this.#keys.modelOfId(id);
    return model === undefined ? undefined : this.#key(model, 'job', id);
  }
  #pendingKeyFor(model: string): string {
    return this.#key(model, 'reviews', 'pending');
  }
  /** The models (shards) this process knows: the cross-shard views read each. */
  #models(): string[] {
    return this.#keys.shards().map((s) => s.model);
  }

  /** The models named that this process knows (every one when undefined). */
  #known(models: readonly string[] | undefined): string[] {
    return models === undefined ? this.#models() : this.#models().filter((m) => models.includes(m));
  }

  /**
   * A new job's id, naming its model's shard (KeySpace.newId): the caller may queue the job in the same round trip as
   * its record (see JobService.submit).
   */
  newId(model: string): string {
    return this.#keys.newId(model);
  }

  /**
   * Creates job `input.id`, or returns the job an earlier submission with the same idempotency key created. The same
   * key with a different request is a conflict (the caller learns it reused a key), never a second job. The script is
   * sent before this returns its promise, so a command the caller issues next reaches Redis after it.
   */
  async create(input: {
    id: string;
    model: string;
    version: string;
    client: string;
    payload: unknown;
    callbackUrl?: string;
    idempotencyKey?: string;
    correlation?: Correlation;
    baseUrl?: string;
    now: number;
  }): Promise<{ id: string; created: boolean; sameRequest: boolean }> {
    const { id } = input;
    const requestHash = createHash('sha256')
      .update(
        JSON.stringify([
          input.model,
          input.payload,
          input.callbackUrl ?? null,
          // a reference only when given, so the hashes of earlier requests stay what they were
          ...(input.correlation?.reference !== undefined ? [input.correlation.reference] : []),
        ]),
      )
      .digest('hex');
    const idem = input.idempotencyKey === undefined ? `auto-${id}` : hashedKeyPart('idem', input.idempotencyKey);
    const idemKey = this.#key(input.model, 'idem', input.client, idem);
    const fields = [
      'id',
      id,
      'model',
      input.model,
      'version',
      input.version,
      'client',
      input.client,
      'state',
      'queued',
      'input',
      JSON.stringify(input.payload),
      'requestHash',
      requestHash,
      'createdAt',
      String(input.now),
      'updatedAt',
      String(input.now),
      'attempts',
      '0',
      'escalated',
      '0',
      ...(input.callbackUrl ? ['callbackUrl', input.callbackUrl] : []),
      ...(input.correlation && Object.keys(input.correlation).length > 0
        ? ['correlation', JSON.stringify(input.correlation)]
        : []),
      ...(input.baseUrl ? ['baseUrl', input.baseUrl] : []),
    ];
    const [created, jobId] = (await (this.#redis as unknown as TriageCommands).triageCreate(
      idemKey,
      this.#key(input.model, 'job', id),
      id,
      requestHash,
      String(this.#idempotencyTtlSeconds),
      ...fields,
    )) as [number, string];
    if (created === 1) return { id: jobId, created: true, sameRequest: true };
    const existingHash = await this.#redis.hget(this.#key(input.model, 'job', jobId), 'requestHash');
    return { id: jobId, created: false, sameRequest: existingHash === requestHash };
  }

  /** A worker takes the job: the record as it is now running, or the state that kept it from running. */
  async claim(id: string, now: number): Promise<{ record?: JobRecord; state: JobState | '' }> {
    const key = this.#jobKey(id);
    if (!key) return { state: '' };
    const [ok, result] = (await (this.#redis as unknown as TriageCommands).triageClaim(key, String(now))) as [
      number,
      string | string[],
    ];
    if (ok !== 1) return { state: result as JobState | '' };
    const flat = result as string[];
    const h: Record<string, string> = {};
    for (let i = 0; i < flat.length; i += 2) h[flat[i] as string] = flat[i + 1] as string;
    return { record: parseRecord(h), state: 'running' };
  }

  async get(id: string): Promise<JobRecord | undefined> {
    const key = this.#jobKey(id);
    if (!key) return undefined;
    const h = await this.#redis.hgetall(key);
    if (!h.id) return undefined;
    return parseRecord(h);
  }

  /** `model` names the per-model review index the transition may touch. */
  async transition(
    id: string,
    model: string,
    from: readonly JobState[],
    to: JobState,
    options: {
      now: number;
      fields?: Record<string, string>;
      pending?: 'add' | 'rem';
      callback?: CallbackEvent;
      audit?: Omit<AuditEntry, 'at'>;
    },
  ): Promise<TransitionResult> {
    const args: string[] = [
      from.join(','),
      to,
      String(options.now),
      options.pending ?? 'none',
      options.callback ? Outbox.member(id, options.callback) : '',
      options.audit ? AuditLog.encode(options.audit, options.now) : '',
      AuditLog.maxEntries,
    ];
    for (const [k, v] of Object.entries(options.fields ?? {})) args.push(k, v);
    // every key in the model's shard; the script's two review indexes (all, per model) are one index per shard
    const [ok, previous] = (await (this.#redis as unknown as TriageCommands).triageTransition(
      this.#key(model, 'job', id),
      this.#pendingKeyFor(model),
      this.#outbox.keyFor(model),
      this.#audit.streamKeyFor(model),
      this.#pendingKeyFor(model),
      ...args,
    )) as [number, string];
    return { ok: ok === 1, previous: previous as JobState | '' };
  }

  /**
   * Waits until the job's shard replicas hold what this connection wrote to it (TRIAGE_REDIS_REPLICA_ACKS replicas,
   * for at most REPLICA_WAIT_MS), else answers 503: Redis replicates asynchronously, so a primary killed right after
   * acknowledging could take the write with it, and the caller must not hear "accepted" or "applied" for a write a
   * failover can lose. The retry is safe: a submission carries its idempotency key, a decision finds itself applied
   * (409 already_decided) or, had a failover lost it, the hold still waiting. WAIT goes in a pipeline after a read of
   * the job's key, so a cluster client sends it to the job's primary.
   */
  async ensureReplicated(id: string): Promise<void> {
    const key = this.#jobKey(id);
    if (this.#replicaAcks === 0 || !key) return;
    const replies = (await this.#redis.pipeline().exists(key).wait(this.#replicaAcks, REPLICA_WAIT_MS).exec()) ?? [];
    const [err, acks] = replies[1] ?? [null, 0];
    if (err) throw err;
    if (Number(acks) < this.#replicaAcks) {
      throw new Problem('dependency_unavailable', 'the write is not yet on a Redis replica: retry shortly', {
        headers: { 'retry-after': '1' },
      });
    }
  }

  /** Marks a hold escalated once; true only for the call that flagged it. */
  async escalate(id: string): Promise<boolean> {
    const key = this.#jobKey(id);
    if (!key) return false;
    const [[, state], [, set]] = (await this.#redis
      .multi()
      .hget(key, 'state')
      .hsetnx(key, 'escalatedAt', String(Date.now()))
      .exec()) as [[null, string | null], [null, number]];
    if (state !== 'awaiting_review') return false;
    if (set === 1) await this.#redis.hset(key, 'escalated', '1');
    return set === 1;
  }

  /**
   * Holds waiting for review, oldest first, of the models named (every model when undefined). Across models the page is merged from each shard's
   * first `offset + limit` holds (no global index, no lock: each shard's index is consistent on its own, and a hold
   * moving between reads is what a reviewer refreshing the queue sees anyway).
   */
  async pendingReviews(
    models: readonly string[] | undefined,
    offset: number,
    limit: number,
  ): Promise<Array<{ id: string; heldAt: number }>> {
    const names = this.#known(models);
    if (names.length === 1) return this.#pendingPage(names[0] as string, offset, offset + limit - 1);
    const pages = await Promise.all(names.map((m) => this.#pendingPage(m, 0, offset + limit - 1)));
    return pages
      .flat()
      .sort((a, b) => a.heldAt - b.heldAt || a.id.localeCompare(b.id))
      .slice(offset, offset + limit);
  }

  async #pendingPage(model: string, start: number, stop: number): Promise<Array<{ id: string; heldAt: number }>> {
    const flat = await this.#redis.zrange(this.#pendingKeyFor(model), String(start), String(stop), 'WITHSCORES');
    const out: Array<{ id: string; heldAt: number }> = [];
    for (let i = 0; i < flat.length; i += 2) out.push({ id: flat[i] as string, heldAt: Number(flat[i + 1]) });
    return out;
  }

  async pendingCount(models?: readonly string[]): Promise<number> {
    const counts = await Promise.all(this.#known(models).map((m) => this.#redis.zcard(this.#pendingKeyFor(m))));
    return counts.reduce((a, b) => a + b, 0);
  }

  async oldestPending(): Promise<number | undefined> {
    const oldest = await Promise.all(this.#models().map((m) => this.#pendingPage(m, 0, 0)));
    const scores = oldest.flat().map((p) => p.heldAt);
    return scores.length === 0 ? undefined : Math.min(...scores);
  }

  /** Holds of a model waiting since before `cutoff` (epoch ms): the escalation sweep's candidates. */
  async overdue(model: string, cutoff: number): Promise<string[]> {
    return this.#redis.zrangebyscore(this.#pendingKeyFor(model), '-inf', String(cutoff));
  }
}

/** Below the connection's command timeout (src/platform/redis.ts), so a slow replica is a false, not an error. */
const REPLICA_WAIT_MS = 400;

interface TriageCommands {
  triageClaim(...args: string[]): Promise<unknown>;
  triageTransition(...args: string[]): Promise<unknown>;
  triageCreate(...args: string[]): Promise<unknown>;
}

function json(text: string | undefined): unknown {
  return text === undefined ? undefined : JSON.parse(text);
}

function parseRecord(h: Record<string, string>): JobRecord {
  const num = (v: string | undefined) => (v === undefined ? undefined : Number(v));
  return {
    id: h.id as string,
    model: h.model as string,
    version: h.version as string,
    client: h.client as string,
    state: h.state as JobState,
    input: json(h.input),
    output: json(h.output),
    amendedOutput: json(h.amendedOutput),
    callbackUrl: h.callbackUrl,
    ...(h.correlation ? { correlation: json(h.correlation) as Correlation } : {}),
    ...(h.baseUrl ? { baseUrl: h.baseUrl } : {}),
    createdAt: Number(h.createdAt),
    updatedAt: Number(h.updatedAt),
    heldAt: num(h.heldAt),
    holdReason: h.holdReason,
    escalated: h.escalated === '1',
    decision: h.decisionOutcome
      ? {
          outcome: h.decisionOutcome as 'approve' | 'reject' | 'amend',
          by: h.decisionBy as string,
          ...(h.decisionBySubject !== undefined ? { bySubject: h.decisionBySubject } : {}),
          ...(h.decisionByName !== undefined ? { byName: h.decisionByName } : {}),
          reason: h.decisionReason ?? '',
          at: Number(h.decisionAt),
        }
      : undefined,
    error: h.error,
    attempts: Number(h.attempts ?? 0),
  };
}
