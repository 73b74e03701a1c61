import { hash } from 'node:crypto';
import type { Logger } from 'pino';
import { scoreValue } from '../monitoring/recorder.ts';
import type { KeySpace } from '../platform/keyspace.ts';
import type { RedisClient } from '../platform/redis.ts';
import type { Prediction } from '../serving/predictions.ts';
import type { ScoreEvent, ScoreObserver } from '../serving/scorer.ts';

/** How long a prediction can still be joined to its outcome. */
export const PREDICTION_RETENTION_DAYS = 30;
const DAY = 86_400_000;

/** The day (since the epoch, UTC) a time falls in: the log's buckets, and the outcome records, are kept by it. */
export function dayOf(ms: number): number {
  return Math.floor(ms / DAY);
}

/**
 * When, at the latest, a prediction logged on `day` can no longer be joined (epoch seconds): its bucket expires the
 * retention after the last write of its day, i.e. by the end of day + retention + 1.
 */
export function joinableUntil(day: number): number {
  return ((day + PREDICTION_RETENTION_DAYS + 2) * DAY) / 1000;
}
const HSET_FIELDS = 250;

/** What an outcome is joined to: the version, its score and the threshold approved when it was made. */
export interface LoggedPrediction {
  model: string;
  version: string;
  score: number;
  threshold: number;
  at: number;
  /**
   * the stored reference of the row (named by every entry with owners, and by an alias: an HL7 message's control id
   * for a prediction also logged under its request id): its outcome is recorded once, under this, whichever name the
   * caller used
   */
  ref?: string;
  /** the clients whose prediction it is (EncodedInput.owners); undefined: logged without (before owners were kept) */
  owners?: readonly string[];
}

/**
 * The reference of a scored row, as the outcome API names it: `request:<id>#<i>`, `job:<id>#<i>`,
 * `batch:<run>:<row>` or `hl7:<sender and control id>`. Request and job ids are the gateway's (UUIDs), kept as they
 * are; a batch row id may be an encounter id, and an HL7 control id is the sender's, so they reach Redis only as a
 * hash.
 */
export function refField(ref: string): string {
  // one-shot hash: a batch hashes every row, and createHash's object per call cost three times as much
  if (ref.startsWith('batch:')) return `batch:${hash('sha256', ref, 'base64url').slice(0, 24)}`;
  return ref.startsWith('hl7:') ? `hl7:${hash('sha256', ref, 'base64url').slice(0, 24)}` : ref;
}

/** The i-th instance of a sync request, named by the request id it was answered with (X-Request-Id). */
export function requestRef(requestId: string, index: number): string {
  return `request:${requestId}#${index}`;
}

/** The i-th instance of an async job. */
export function jobRef(jobId: string, index: number): string {
  return `job:${jobId}#${index}`;
}

/** A batch run's row, by the id the input gave it. */
export function batchRef(runId: string, rowId: string): string {
  return `batch:${runId}:${rowId}`;
}

/**
 * The reference an outcome names an HL7v2 message's prediction by: its message control id (MSH-10), which the
 * sender chose and the ACK echoed in MSA-2, within its sender (MSH-3 sending application, MSH-4 sending facility),
 * as control ids are unique only per sending system. Each field as sent, components and all.
 */
export function hl7Ref(o: { sendingApplication: string; sendingFacility: string; controlId: string }): string {
  return `hl7:${JSON.stringify([o.sendingApplication, o.sendingFacility, o.controlId])}`;
}

/**
 * The stored form of a logged prediction, `version|score|threshold|at|model`: compact, as a busy second writes
 * thousands. The parts the rows of one scoring share are joined once (a batch chunk logs a thousand rows). With
 * owners, `|<stored reference>|<owners>` follows: the row's own reference first (an alias's entry names it there
 * anyway, and a process from before owners, reading the entry during a rolling upgrade, takes the sixth part for the
 * row's reference), then the owners, each URI-encoded (a token's id is the issuer's subject), joined by commas.
 */
function encoder(p: Omit<LoggedPrediction, 'score' | 'ref'>): (score: number, own: string) => string {
  const head = `${p.version}|`;
  const tail = `|${p.threshold}|${p.at}|${p.model}`;
  if (p.owners === undefined) return (score) => `${head}${score}${tail}`;
  const owners = `|${p.owners.map(encodeURIComponent).join(',')}`;
  return (score, own) => `${head}${score}${tail}|${own}${owners}`;
}

function decode(value: string): LoggedPrediction {
  const [version, score, threshold, at, model, ref, owners] = value.split('|') as [
    string,
    string,
    string,
    string,
    string,
    string?,
    string?,
  ];
  const p: LoggedPrediction = { model, version, score: Number(score), threshold: Number(threshold), at: Number(at) };
  // an alias's entry (and an entry with owners) names the stored reference of its row (never a `|`)
  if (ref !== undefined) p.ref = ref;
  if (owners !== undefined) p.owners = owners === '' ? [] : owners.split(',').map(decodeURIComponent);
  return p;
}

/** A day bucket of the log: `prefix` is a model's shard (or, for rows logged before shards, the global tag). */
export function dayKey(prefix: string, day: number): string {
  return `${prefix}:predictions:${day}`;
}

/**
 * Logs every scored row that carries a reference (its version, score and the approved threshold) so an outcome
 * observed later can be joined to it. Buffered on the caller's path, written once a second as HSETs per day bucket
 * of each model's shard (`{<base>:<model>}:predictions:<day>`: on a Redis Cluster, on the model's primary); buckets
 * expire after the retention.
 */
export class PredictionLog implements ScoreObserver {
  readonly #redis: RedisClient;
  readonly #keys: KeySpace;
  readonly #logger: Logger | undefined;
  readonly #now: () => number;
  #buffer: Array<{
    refs: readonly (string | readonly string[])[];
    owners?: readonly string[];
    scores: number[];
    model: string;
    version: string;
    threshold: number;
    at: number;
  }> = [];
  /** rows in the buffer */
  #bufferedRows = 0;
  readonly #maxBufferedRows: number;
  /** a flush for the rows past the bound is waiting behind the flush under way */
  #flushQueued = false;
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> = Promise.resolve();

  constructor(o: {
    redis: RedisClient;
    keys: KeySpace;
    logger?: Logger;
    now?: () => number;
    flushEveryMs?: number;
    /**
     * flush as soon as this many rows wait (default: only on the timer). A batch thread logs a chunk of rows every
     * few ms: held for a second, they outlive the young generation and every one is promoted and collected again
     */
    maxBufferedRows?: number;
  }) {
    this.#redis = o.redis;
    this.#keys = o.keys;
    this.#logger = o.logger;
    this.#now = o.now ?? Date.now;
    this.#maxBufferedRows = o.maxBufferedRows ?? Number.POSITIVE_INFINITY;
    if (o.flushEveryMs !== 0) {
      this.#timer = setInterval(() => void this.flush(), o.flushEveryMs ?? 1000);
      this.#timer.unref();
    }
  }

  onScore(event: ScoreEvent): void {
    const refs = event.input.refs;
    if (!refs) return;
    const { model, result } = event;
    const output = model.manifest.output;
    // one entry per scoring, the rows' scores in an array: the rows are shaped at flush, off the caller's path
    const predictions = result.predictions;
    const scores = new Array<number>(predictions.length);
    for (let i = 0; i < predictions.length; i++) scores[i] = scoreValue(output, predictions[i] as Prediction);
    this.#buffer.push({
      refs,
      ...(event.input.owners !== undefined ? { owners: event.input.owners } : {}),
      scores,
      model: model.name,
      version: result.version,
      threshold: output.threshold,
      at: this.#now(),
    });
    this.#bufferedRows += refs.length;
    // one flush waiting behind the one under way takes every row logged meanwhile
    if (this.#bufferedRows >= this.#maxBufferedRows && !this.#flushQueued) {
      this.#flushQueued = true;
      void this.flush();
    }
  }

  flush(): Promise<void> {
    this.#flushing = this.#flushing.then(() => this.#flush());
    return this.#flushing;
  }

  async #flush(): Promise<void> {
    this.#flushQueued = false;
    if (this.#buffer.length === 0) return;
    const buffer = this.#buffer;
    this.#buffer = [];
    this.#bufferedRows = 0;
    const day = dayOf(this.#now());
    // a busy second logs many thousands of rows: HSETs of a bounded size, each shaped in a slice of its own and
    // the event loop let go in between, so a flush never holds up the bedside requests arriving meanwhile
    const writes: Array<Promise<unknown>> = [];
    // per model: its shard's day bucket and the fields not yet sent (looked up by the model's name, computed once)
    const byModel = new Map<string, { key: string; fields: string[] }>();
    for (const e of buffer) {
      let bucket = byModel.get(e.model);
      if (!bucket) {
        bucket = { key: dayKey(this.#keys.shard(e.model), day), fields: [] };
        byModel.set(e.model, bucket);
      }
      const { fields } = bucket;
      const encode = encoder(e);
      for (let i = 0; i < e.scores.length; i++) {
        const ref = e.refs[i];
        if (typeof ref === 'string') {
          const own = refField(ref);
          fields.push(own, encode(e.scores[i] as number, own));
        } else if (ref !== undefined && ref.length > 0) {
          // the row under its own reference, and each alias pointing to it
          const own = refField(ref[0] as string);
          const value = encode(e.scores[i] as number, own);
          fields.push(own, value);
          const alias = e.owners === undefined ? `${value}|${own}` : value; // with owners, the value names it already
          for (let a = 1; a < ref.length; a++) fields.push(refField(ref[a] as string), alias);
        }
      }
      if (fields.length >= 2 * HSET_FIELDS) {
        writes.push(this.#redis.hset(bucket.key, ...fields));
        bucket.fields = [];
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    }
    for (const { key, fields } of byModel.values()) {
      if (fields.length > 0) writes.push(this.#redis.hset(key, ...fields));
      writes.push(this.#redis.expire(key, (PREDICTION_RETENTION_DAYS + 1) * 86_400));
    }
    await Promise.all(writes).catch((err: Error) =>
      this.#logger?.warn({ err: { message: err.message } }, 'prediction log flush failed'),
    );
  }

  /**
   * The prediction a reference names, looked up over the retention. A job id names its model's shard; a request id
   * or a batch row does not, so every shard is asked (one pipeline each, in parallel: outcomes arrive at the pace of
   * clinical observation, not of scoring), and the log under the global tag that processes before model shards wrote
   * (it expires by itself: PREDICTION_RETENTION_DAYS after the last such process stopped). Should two shards hold
   * the same reference (a client reusing a request id across models), the latest prediction is the one joined.
   */
  async find(ref: string): Promise<LoggedPrediction | undefined> {
    const field = refField(ref);
    const today = dayOf(this.#now());
    const jobModel = ref.startsWith('job:') ? this.#keys.modelOfId(ref.slice(4).split('#')[0] as string) : undefined;
    const prefixes = jobModel ? [this.#keys.shard(jobModel)] : this.#keys.shards().map((s) => s.prefix);
    const found = await Promise.all(
      [...prefixes, this.#keys.global].map(async (prefix) => {
        const pipeline = this.#redis.pipeline();
        for (let d = 0; d <= PREDICTION_RETENTION_DAYS; d++) pipeline.hget(dayKey(prefix, today - d), field);
        for (const [err, value] of (await pipeline.exec()) ?? []) {
          if (err) throw err; // not "no such prediction": Redis did not answer
          if (typeof value === 'string') return decode(value);
        }
        return undefined;
      }),
    );
    return found.reduce<LoggedPrediction | undefined>(
      (latest, p) => (p && (!latest || p.at > latest.at) ? p : latest),
      undefined,
    );
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush();
  }
}
