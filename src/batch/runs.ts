import { randomBytes } from 'node:crypto';
import type { ExportSource } from '../ingress/export-request.ts';
import type { KeySpace } from '../platform/keyspace.ts';
import type { RedisClient } from '../platform/redis.ts';
import type { batchFormats } from '../registry/schema.ts';
import { RUNS_DIR } from './storage.ts';

export type BatchFormat = (typeof batchFormats)[number];
export type RunState = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled' | 'skipped';
/** how a run's output waits for clinician review (the model's `batch.review.hold` when the run first started) */
export type ReviewHold = 'run' | 'above-threshold';
/**
 * What of a run with an output location is in its bucket: `published` everything the run released; `partial` the
 * rows an above-threshold hold released at once (its held rows wait for a reviewer, or were rejected); nothing yet
 * (`awaiting_review`: a whole run held) or ever (`withheld`: a whole run rejected); `failed`: the last publication
 * gave up after its retries (`publishError` says why).
 */
export type PublishState = 'published' | 'partial' | 'awaiting_review' | 'withheld' | 'failed';

/** A batch run as stored in Redis. The checkpoint fields move together, once per committed chunk. */
export interface BatchRun {
  id: string;
  model: string;
  version: string;
  /** `api:<key id>` for on-demand runs, `schedule:<id>` for scheduled ones */
  requestedBy: string;
  scheduleId?: string;
  /**
   * the run's folder under the data directory: its id and 128 random bits, so a scheduled run's folder cannot be
   * predicted from its schedule and slot (and prepared with links by whoever can write to the data volume)
   */
  dir: string;
  /** client key ids that may read a scheduled run (the schedule's `readers`); admins always may */
  readers?: string[];
  input: { path: string; format: BatchFormat };
  /** a bucket prefix (`s3://…`, `gs://…`) the completed run's files are published under, beside its own folder */
  output?: string;
  /** the FHIR server export that feeds the run, when it is not a file */
  source?: ExportSource;
  asOf: number;
  state: RunState;
  createdAt: number;
  startedAt?: number;
  finishedAt?: number;
  error?: string;
  // checkpoint
  rowsDone: number;
  scored: number;
  failed: number;
  /** patients without the data to score (FHIR runs): in the error file, counted apart from failed rows */
  insufficient: number;
  outputBytes: number;
  errorBytes: number;
  chunks: number;
  /** bytes committed to each shadow version's output file */
  shadowBytes: Record<string, number>;
  /** held for clinician review: fixed at the first start, so a resumed run splits its rows the same way */
  review?: ReviewHold;
  /** scored rows at or above the threshold (in `above-threshold` runs: the rows in the held file) */
  above: number;
  /** bytes committed to the held rows' file (`above-threshold` runs) */
  heldBytes: number;
  /** runs with an `output`: what is in the bucket, since when; the last failed upload's error until one succeeds */
  publishState?: PublishState;
  publishedAt?: number;
  publishError?: string;
}

/** The rows an `above-threshold` run holds for review, apart from the output released at once. */
export const HELD_FILE = 'output.held.ndjson';

export function shadowFileName(version: string): string {
  return `output.shadow-${version}.ndjson`;
}

type RunFolder = Pick<BatchRun, 'dir'>;

export function shadowOutputKey(run: RunFolder, version: string): string {
  return `${run.dir}/${shadowFileName(version)}`;
}

export function outputKey(
  run: RunFolder,
  file: 'output.ndjson' | 'errors.ndjson' | 'manifest.json' | typeof HELD_FILE,
): string {
  return `${run.dir}/${file}`;
}

function newRunDir(id: string): string {
  return `${RUNS_DIR}/${id}.${randomBytes(16).toString('hex')}`;
}

const CREATE = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
`;

const TRANSITION = `
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
for s in string.gmatch(ARGV[1], '[^,]+') do
  if s == state then
    redis.call('HSET', KEYS[1], 'state', ARGV[2], unpack(ARGV, 3))
    return 1
  end
end
return 0
`;

/**
 * Batch run records in Redis: created once (a slot re-triggered finds its run), checkpointed per chunk. A run lives in
 * its model's shard (`{<base>:<model>}:batch:<id>`, indexed by `…:batches`), found from its id alone (KeySpace.newId,
 * KeySpace.idFor). An id that names no shard is a run recorded before shards: it is read and written where it was,
 * under the global tag, so status URLs already handed out keep working (k8s/README.md, "Upgrading to shards").
 */
export class RunStore {
  readonly #redis: RedisClient;
  readonly #keys: KeySpace;

  constructor(redis: RedisClient, keys: KeySpace) {
    this.#redis = redis;
    this.#keys = keys;
  }

  /** The tag a run's keys live under: its model's shard, or the global tag for a run from before shards. */
  #tagOf(id: string): string {
    return this.#keys.shardOfId(id) ?? this.#keys.global;
  }
  #key(id: string): string {
    return `${this.#tagOf(id)}:batch:${id}`;
  }
  #indexKey(tag: string): string {
    return `${tag}:batches`;
  }

  /** A new run's id: it names the model's shard, so the run is found from its id alone. */
  newId(model: string): string {
    return this.#keys.newId(model);
  }

  /** The run's state alone (a running run checks it between chunks: cancelled?). */
  async state(id: string): Promise<RunState | undefined> {
    return ((await this.#redis.hget(this.#key(id), 'state')) ?? undefined) as RunState | undefined;
  }

  /** Creates the run unless one with this id exists; true when this call created it. */
  async create(
    run: Omit<
      BatchRun,
      | 'rowsDone'
      | 'scored'
      | 'failed'
      | 'insufficient'
      | 'outputBytes'
      | 'errorBytes'
      | 'chunks'
      | 'shadowBytes'
      | 'dir'
      | 'above'
      | 'heldBytes'
    >,
  ): Promise<boolean> {
    const fields: Record<string, string> = {
      id: run.id,
      model: run.model,
      version: run.version,
      requestedBy: run.requestedBy,
      // set only by the call that creates the record: a re-triggered slot finds the folder of its first run
      dir: newRunDir(run.id),
      ...(run.readers ? { readers: JSON.stringify(run.readers) } : {}),
      inputPath: run.input.path,
      inputFormat: run.input.format,
      asOf: String(run.asOf),
      state: run.state,
      createdAt: String(run.createdAt),
      rowsDone: '0',
      scored: '0',
      failed: '0',
      insufficient: '0',
      outputBytes: '0',
      errorBytes: '0',
      chunks: '0',
      ...(run.scheduleId ? { scheduleId: run.scheduleId } : {}),
      ...(run.source ? { source: JSON.stringify(run.source) } : {}),
      ...(run.output ? { outputUrl: run.output } : {}),
      ...(run.error ? { error: run.error } : {}),
    };
    const created = (await this.#redis.eval(
      CREATE,
      2,
      this.#key(run.id),
      this.#indexKey(this.#tagOf(run.id)),
      run.id,
      String(run.createdAt),
      ...Object.entries(fields).flat(),
    )) as number;
    return created === 1;
  }

  async get(id: string): Promise<BatchRun | undefined> {
    const h = await this.#redis.hgetall(this.#key(id));
    if (!h.id || !h.model) return undefined;
    const n = (v: string | undefined) => (v === undefined ? undefined : Number(v));
    return {
      id: h.id,
      model: h.model,
      version: h.version as string,
      requestedBy: h.requestedBy as string,
      ...(h.scheduleId ? { scheduleId: h.scheduleId } : {}),
      // runs recorded before folders were randomised keep their old folder
      dir: h.dir ?? `${RUNS_DIR}/${h.id}`,
      ...(h.readers ? { readers: JSON.parse(h.readers) as string[] } : {}),
      input: { path: h.inputPath as string, format: h.inputFormat as BatchFormat },
      ...(h.source ? { source: JSON.parse(h.source) as ExportSource } : {}),
      ...(h.outputUrl ? { output: h.outputUrl } : {}),
      asOf: Number(h.asOf),
      state: h.state as RunState,
      createdAt: Number(h.createdAt),
      startedAt: n(h.startedAt),
      finishedAt: n(h.finishedAt),
      ...(h.error ? { error: h.error } : {}),
      rowsDone: Number(h.rowsDone ?? 0),
      scored: Number(h.scored ?? 0),
      failed: Number(h.failed ?? 0),
      insufficient: Number(h.insufficient ?? 0),
      outputBytes: Number(h.outputBytes ?? 0),
      errorBytes: Number(h.errorBytes ?? 0),
      chunks: Number(h.chunks ?? 0),
      shadowBytes: h.shadowBytes ? (JSON.parse(h.shadowBytes) as Record<string, number>) : {},
      ...(h.review ? { review: h.review as ReviewHold } : {}),
      above: Number(h.above ?? 0),
      heldBytes: Number(h.heldBytes ?? 0),
      ...(h.publishState ? { publishState: h.publishState as PublishState } : {}),
      ...(h.publishedAt ? { publishedAt: Number(h.publishedAt) } : {}),
      ...(h.publishError ? { publishError: h.publishError } : {}),
    };
  }

  async update(id: string, fields: Record<string, string | number>): Promise<void> {
    await this.#redis.hset(this.#key(id), Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, String(v)])));
  }

  /** Moves the state only from one of `from`; true when it moved. */
  async transition(
    id: string,
    from: readonly RunState[],
    to: RunState,
    fields: Record<string, string | number> = {},
  ): Promise<boolean> {
    const flat = Object.entries(fields).flatMap(([k, v]) => [k, String(v)]);
    return ((await this.#redis.eval(TRANSITION, 1, this.#key(id), from.join(','), to, ...flat)) as number) === 1;
  }

  /**
   * Run ids, newest first, merged from every shard's index (and the pre-shard one): each index gives its newest
   * `offset + limit`, enough for any page; no lock, so a run created meanwhile shows on the next read.
   */
  async list(offset: number, limit: number): Promise<string[]> {
    const tags = [this.#keys.global, ...this.#keys.shards().map((s) => s.prefix)];
    const pages = await Promise.all(
      tags.map((t) => this.#redis.zrevrange(this.#indexKey(t), 0, offset + limit - 1, 'WITHSCORES')),
    );
    const rows: Array<{ id: string; at: number }> = [];
    for (const flat of pages) {
      for (let i = 0; i < flat.length; i += 2) rows.push({ id: flat[i] as string, at: Number(flat[i + 1]) });
    }
    rows.sort((a, b) => b.at - a.at || a.id.localeCompare(b.id));
    return rows.slice(offset, offset + limit).map((r) => r.id);
  }
}
