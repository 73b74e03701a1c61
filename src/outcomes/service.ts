import { mayReadRun } from '../batch/data-areas.ts';
import type { RunStore } from '../batch/runs.ts';
import { mayReadJob } from '../jobs/service.ts';
import type { JobStore } from '../jobs/store.ts';
import { AuditLog } from '../platform/audit.ts';
import { assertModelAllowed, type Principal } from '../platform/auth.ts';
import { Problem } from '../platform/errors.ts';
import { onlyFields } from '../platform/json-body.ts';
import type { KeySpace } from '../platform/keyspace.ts';
import type { RedisClient } from '../platform/redis.ts';
import type { CatalogModel } from '../serving/catalog.ts';
import { type Labelled, outcomeMetrics } from './metrics.ts';
import {
  batchRef,
  dayOf,
  hl7Ref,
  jobRef,
  joinableUntil,
  type LoggedPrediction,
  PREDICTION_RETENTION_DAYS,
  type PredictionLog,
  refField,
  requestRef,
} from './prediction-log.ts';

/** Outcomes kept per model version for the figures (the oldest are trimmed). */
const MAX_OUTCOMES = 100_000;
/** How far ahead of this clock an observation time may be (clock skew between systems). */
const MAX_SKEW_MS = 5 * 60_000;

/**
 * Records an outcome once, in the model's shard and in one step: the record by reference (KEYS[1], a hash of the
 * prediction's day that expires at ARGV[7], once its prediction can no longer be joined), the row the figures read
 * (KEYS[2], a capped list) and the audit entry (KEYS[3], the shard's audit stream). KEYS[4] is where records were kept
 * before they were bounded (one hash, for good): still read, never written, and given an expiry (ARGV[8] seconds)
 * the first time it is seen without one, as every prediction it could match expires within the retention. Returns the
 * record already there, or nil when this one was new.
 */
const RECORD = `
local existing = redis.call('HGET', KEYS[4], ARGV[1]) or redis.call('HGET', KEYS[1], ARGV[1])
if redis.call('TTL', KEYS[4]) == -1 then redis.call('EXPIRE', KEYS[4], ARGV[8]) end
if existing then return existing end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIREAT', KEYS[1], ARGV[7])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'entry', ARGV[6])
return nil
`;

const EXPIRE_IF_KEPT_FOR_GOOD = `if redis.call('TTL', KEYS[1]) == -1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end`;

/** The records of the outcomes of one day's predictions, in a model's shard. */
function outcomeRecordsKey(shard: string, predictionDay: number): string {
  return `${shard}:outcome-records:${predictionDay}`;
}

export interface RecordedOutcome extends LoggedPrediction {
  outcome: boolean;
  observedAt: number;
  recordedBy: string;
}

/**
 * Observed outcomes, joined to what was predicted: by request id, job id or batch row. Idempotent (the same outcome
 * again is a no-op; a different one for the same prediction is refused), validated and audited. The figures per
 * version use the threshold approved when each prediction was made.
 *
 * Kept in the predicted model's shard (`{<base>:<model>}:outcome-records:<day>`, the records by reference, one hash
 * per day of predictions kept as long as those predictions can be joined, and `…:outcomes:<version>`, the capped rows
 * the figures read): on a Redis Cluster a model's outcomes are written on its primary.
 * Outcomes recorded before model shards stay where they were (`<global>:outcomes` and
 * `<global>:outcomes:<model>:<version>`, kept like any outcome) and are read beside the shard's: nothing is moved.
 */
export class OutcomeService {
  readonly #redis: RedisClient;
  readonly #keys: KeySpace;
  readonly #log: PredictionLog | undefined;
  readonly #records: OutcomeServiceRecords;
  readonly #audit: AuditLog;
  readonly #now: () => number;
  #legacyBounded = false;

  constructor(o: {
    redis: RedisClient;
    keys: KeySpace;
    log: PredictionLog | undefined;
    records: OutcomeServiceRecords;
    audit: AuditLog;
    now?: () => number;
  }) {
    this.#redis = o.redis;
    this.#keys = o.keys;
    this.#log = o.log;
    this.#records = o.records;
    this.#audit = o.audit;
    this.#now = o.now ?? Date.now;
  }

  #listKey(model: string, version: string): string {
    return `${this.#keys.shard(model)}:outcomes:${version}`;
  }

  /** Where outcomes were recorded before model shards (read, never written). */
  #legacy(model?: string, version?: string): string {
    return model === undefined ? `${this.#keys.global}:outcomes` : `${this.#keys.global}:outcomes:${model}:${version}`;
  }

  /**
   * A client names only its own jobs and the batch runs it may read, as GET /v1/jobs/:id and /v1/batches/:id let it
   * see only those (the same rules: mayReadJob, mayReadRun): the answer carries the prediction's score, so another
   * client's would be read (and its figures written) through here. A job's score is the client's only once released:
   * held for review, rejected or cancelled, it was never served. A request names its owner in the prediction log
   * (mayReport). Reviewers and admins record outcomes of any prediction of the models they are allowed.
   */
  async #assertMayName(principal: Principal, body: Record<string, unknown>): Promise<void> {
    if (principal.role !== 'client') return;
    if (typeof body.jobId === 'string') {
      const job = await this.#records.jobs.get(body.jobId);
      if (!job || !mayReadJob(principal, job)) throw new Problem('not_found', 'no such job');
      if (job.state === 'awaiting_review')
        throw new Problem('awaiting_review', 'this job is held for clinician review');
      if (job.state !== 'released')
        throw new Problem('invalid_state', `this job was never released: it is ${job.state}`);
    }
    const batch = body.batch as { runId?: unknown } | null | undefined;
    if (typeof batch === 'object' && batch !== null && typeof batch.runId === 'string') {
      const run = await this.#records.runs.get(batch.runId);
      if (!run || !mayReadRun(principal, run)) throw new Problem('not_found', 'no such batch run');
    }
  }

  async record(
    principal: Principal,
    body: Record<string, unknown>,
  ): Promise<{ created: boolean; outcome: RecordedOutcome }> {
    onlyFields(body, ['requestId', 'jobId', 'batch', 'hl7', 'index', 'outcome', 'observedAt']);
    const ref = refOf(body);
    const outcome = body.outcome;
    if (typeof outcome !== 'boolean') throw new Problem('invalid_request', 'outcome must be true or false');
    const observedAt = typeof body.observedAt === 'string' ? Date.parse(body.observedAt) : Number.NaN;
    if (!Number.isFinite(observedAt) || !/^\d{4}-\d\d-\d\dT/.test(String(body.observedAt))) {
      throw new Problem('invalid_request', 'observedAt must be an ISO 8601 date-time');
    }
    if (observedAt > this.#now() + MAX_SKEW_MS) throw new Problem('invalid_request', 'observedAt is in the future');
    await this.#assertMayName(principal, body);
    if (!this.#log) throw new Problem('not_found', 'predictions are not logged here (TRIAGE_MONITORING=off)');
    await this.#log.flush(); // a prediction made a moment ago is joinable at once
    const prediction = await this.#log.find(ref);
    // a client reports on its own requests only: another client's is unknown to it, as its job or run would be
    if (!prediction || !mayReport(principal, prediction)) {
      throw new Problem(
        'not_found',
        `no prediction by that reference (predictions are kept ${PREDICTION_RETENTION_DAYS} days)`,
      );
    }
    assertModelAllowed(principal, prediction.model);
    if (observedAt < prediction.at)
      throw new Problem('invalid_request', 'observedAt is before the prediction was made');
    const { ref: stored, ...predicted } = prediction;
    const recorded: RecordedOutcome = { ...predicted, outcome, observedAt, recordedBy: principal.id };
    // found by an alias (an HL7 message's control id): recorded under the row's own reference, so the outcome
    // named both ways is one outcome (a replay, or a conflict), never two rows in the figures
    const field = stored ?? refField(ref);
    const { model, version } = prediction;
    const shard = this.#keys.shard(model);
    const row = [prediction.score, prediction.threshold, outcome ? 1 : 0, prediction.at, observedAt].join(',');
    const entry = AuditLog.encode(
      {
        actor: principal.id,
        role: principal.role,
        action: 'outcome.record',
        target: `outcome:${field}`,
        model,
        version,
        detail: `outcome ${outcome} observed ${new Date(observedAt).toISOString()}`,
      },
      this.#now(),
    );
    // kept while its prediction can be joined (the prediction log's day buckets go a retention after their day): a
    // replay within that time is answered from the record; after it, the prediction is gone and so is the record
    const day = dayOf(prediction.at);
    const expiresAt = joinableUntil(day);
    const retentionSeconds = (PREDICTION_RETENTION_DAYS + 1) * 86_400;
    if (!this.#legacyBounded) {
      // records from before model shards: no longer written, so bounded like the shard's old hash (once a process)
      await this.#redis.eval(EXPIRE_IF_KEPT_FOR_GOOD, 1, this.#legacy(), retentionSeconds);
      this.#legacyBounded = true;
    }
    const earlier =
      (await this.#redis.hget(this.#legacy(), field)) ??
      ((await this.#redis.eval(
        RECORD,
        4,
        outcomeRecordsKey(shard, day),
        this.#listKey(model, version),
        this.#audit.streamKeyFor(model),
        `${shard}:outcomes`,
        field,
        JSON.stringify(recorded),
        row,
        MAX_OUTCOMES,
        AuditLog.maxEntries,
        entry,
        expiresAt,
        retentionSeconds,
      )) as string | null);
    if (earlier === null) return { created: true, outcome: recorded };
    const existing = JSON.parse(earlier) as RecordedOutcome;
    if (existing.outcome !== outcome || existing.observedAt !== observedAt) {
      throw new Problem('outcome_conflict', 'a different outcome was already recorded for this prediction');
    }
    return { created: false, outcome: existing };
  }

  /** The outcome figures of one version (every outcome kept, in the shard and from before shards). */
  async figures(model: CatalogModel, version: string) {
    const [before, since] = await Promise.all([
      this.#redis.lrange(this.#legacy(model.name, version), 0, -1),
      this.#redis.lrange(this.#listKey(model.name, version), 0, -1),
    ]);
    const rows = before.length > 0 ? before.concat(since) : since;
    const labelled: Labelled[] = rows.map((r) => {
      const [score, threshold, y, at, observed] = r.split(',').map(Number) as [number, number, number, number, number];
      return { score, threshold, outcome: y === 1, delayMs: observed - at };
    });
    const out = model.manifest.output;
    const probability = out.kind !== 'score' || ((out.min ?? 0) >= 0 && (out.max ?? 1) <= 1);
    return outcomeMetrics(labelled, { probability });
  }
}

/** Where the records that say whose a job or a batch run is are read (the caller names one; see #assertMayName). */
export interface OutcomeServiceRecords {
  jobs: Pick<JobStore, 'get'>;
  runs: Pick<RunStore, 'get'>;
}

/**
 * Whether the principal may report this logged prediction's outcome: a client only its own (or one logged without
 * owners: a job's or a batch row's, whose record was checked first; one logged before owners were kept; one from a
 * door with no calling client); a reviewer, the clinician who saw what happened, any of the models it is allowed
 * (checked after).
 */
function mayReport(principal: Principal, prediction: LoggedPrediction): boolean {
  return principal.role !== 'client' || prediction.owners === undefined || prediction.owners.includes(principal.id);
}

/**
 * The reference the body names: exactly one of a request id, a job id (with an instance index), a batch row or an
 * HL7v2 message (its control id, within its sender).
 */
function refOf(body: Record<string, unknown>): string {
  const given = ['requestId', 'jobId', 'batch', 'hl7'].filter((k) => body[k] !== undefined);
  if (given.length !== 1)
    throw new Problem('invalid_request', 'name the prediction by exactly one of requestId, jobId, batch or hl7');
  if (body.hl7 !== undefined) return hl7RefOf(body);
  const index = body.index ?? 0;
  if (!Number.isInteger(index) || (index as number) < 0 || (index as number) > 100_000) {
    throw new Problem('invalid_request', 'index must be the instance index (0 for the first)');
  }
  const id = (v: unknown, what: string) => {
    if (typeof v !== 'string' || !/^[A-Za-z0-9._:-]{1,128}$/.test(v))
      throw new Problem('invalid_request', `${what} is not valid`);
    return v;
  };
  if (body.requestId !== undefined) return requestRef(id(body.requestId, 'requestId'), index as number);
  if (body.jobId !== undefined) return jobRef(id(body.jobId, 'jobId'), index as number);
  const batch = body.batch as { runId?: unknown; rowId?: unknown } | null;
  if (typeof batch !== 'object' || batch === null || Array.isArray(batch)) {
    throw new Problem('invalid_request', 'batch must be {"runId", "rowId"}');
  }
  onlyFields(batch as Record<string, unknown>, ['runId', 'rowId']);
  return batchRef(id(batch.runId, 'batch.runId'), id(batch.rowId, 'batch.rowId'));
}

/** An HL7 field as the outcome API takes it: the text as sent (it is hashed, never logged or stored as it is). */
function hl7Field(v: unknown, what: string, required: boolean): string {
  if (v === undefined && !required) return '';
  // printable, no segment or line breaks; 199 is v2.5's length of MSH-10 (an HD of MSH-3/MSH-4 is shorter)
  if (typeof v !== 'string' || v.length > 199 || (required && v.length === 0) || /\p{Cc}/u.test(v))
    throw new Problem('invalid_request', `${what} is not valid`);
  return v;
}

/** `{"hl7": {"controlId", "sendingApplication"?, "sendingFacility"?}}`: one message, one prediction (no index). */
function hl7RefOf(body: Record<string, unknown>): string {
  if (body.index !== undefined && body.index !== 0)
    throw new Problem('invalid_request', 'an HL7 message has one prediction: index must be 0 or absent');
  const hl7 = body.hl7 as Record<string, unknown> | null;
  if (typeof hl7 !== 'object' || hl7 === null || Array.isArray(hl7)) {
    throw new Problem('invalid_request', 'hl7 must be {"controlId", "sendingApplication"?, "sendingFacility"?}');
  }
  onlyFields(hl7, ['controlId', 'sendingApplication', 'sendingFacility']);
  return hl7Ref({
    controlId: hl7Field(hl7.controlId, 'hl7.controlId (MSH-10)', true),
    sendingApplication: hl7Field(hl7.sendingApplication, 'hl7.sendingApplication (MSH-3)', false),
    sendingFacility: hl7Field(hl7.sendingFacility, 'hl7.sendingFacility (MSH-4)', false),
  });
}
