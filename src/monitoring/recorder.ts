import type { Logger } from 'pino';
import type { KeySpace } from '../platform/keyspace.ts';
import type { RedisClient } from '../platform/redis.ts';
import type { OutputSpec } from '../registry/schema.ts';
import type { CatalogModel } from '../serving/catalog.ts';
import { confidenceOf, type Prediction } from '../serving/predictions.ts';
import type { ScoreEvent, ScoreObserver } from '../serving/scorer.ts';
import { comparable } from '../serving/shadow.ts';
import { binOf } from './psi.ts';
import { bucketKey, FIVE_MINUTES, HOUR, LATENCY_EDGES_MS, SCORE_BINS, TTL_SECONDS } from './windows.ts';

/** Adds every field of a flush to the five-minute and the hourly bucket in one step, and keeps their expiry. */
const ADD = `
for i = 3, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
  redis.call('HINCRBYFLOAT', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
`;

export type ReviewDecision = 'approve' | 'amend' | 'reject';

/** The score a prediction is monitored on, and whether it is at or above the approved threshold. */
export function scoreOf(output: OutputSpec, p: Prediction): { score: number; above: boolean } {
  const score = scoreValue(output, p);
  return { score, above: aboveThreshold(output, p, score) };
}

/** scoreOf(output, p).score without the object: a batch asks it of every row, twice (the log and monitoring). */
export function scoreValue(output: OutputSpec, p: Prediction): number {
  return output.kind === 'score' ? Number(p[output.scoreName]) : comparable(output, p).score;
}

/** scoreOf(output, p).above, given the prediction's score (scoreValue). */
function aboveThreshold(output: OutputSpec, p: Prediction, score: number): boolean {
  // a score at or above the threshold is positive; for classes and matches the threshold is a confidence
  return output.kind === 'score' ? score >= output.threshold : confidenceOf(p) >= output.threshold;
}

/** The range the output histogram spans. */
export function scoreRange(output: OutputSpec): [number, number] {
  return output.kind === 'score' ? [output.min ?? 0, output.max ?? 1] : [0, 1];
}

/** The output histogram's bin of a score: SCORE_BINS equal bins from `lo`, the ends catching what falls outside. */
export function scoreBin(score: number, lo: number, width: number): number {
  return Math.min(SCORE_BINS - 1, Math.max(0, Math.floor((score - lo) / width)));
}

type FeatureBins = Array<{ name: string; edges: readonly number[]; counts: number[] } | undefined>;

/** Per feature column of the manifest: its profile's edges and counts per bin (none for a column not profiled). */
function featureBins(model: CatalogModel, version: string): FeatureBins {
  const profile = model.loaded.profiles.get(version);
  if (!profile || model.manifest.input !== 'features') return [];
  return model.manifest.features.map((f) => {
    const bins = profile.features[f.name];
    return bins && { name: f.name, edges: bins.edges, counts: new Array(bins.expected.length).fill(0) };
  });
}

/** What one process counted for one model version since its last flush. */
interface Aggregate {
  model: string;
  version: string;
  n: Record<'calls' | 'rows' | 'scored' | 'above' | 'known' | 'assumed' | 'lat_sum' | 'reviews', number>;
  tiers: Record<string, number>;
  lat: number[];
  score: number[];
  /** per feature column of the manifest: its profile's edges and the counts per bin (absent: not profiled) */
  features: FeatureBins | undefined;
  decisions: Record<ReviewDecision, number>;
  /** CDS Hooks card feedback: accepted and overridden, and overrides by reason code */
  feedback: { accepted: number; overridden: number; reasons: Record<string, number> };
}

/**
 * Monitoring taps on the one scorer (every tier): per model version, the input bins against its reference profile,
 * rows with assumed values, the output histogram and share above the threshold, latency, and review decisions.
 * Counted in memory on the caller's path (array increments, no allocation per row) and flushed to Redis once a
 * second. Counts only: no input value, output or identifier leaves the process.
 */
export class MonitoringRecorder implements ScoreObserver {
  readonly #redis: RedisClient;
  readonly #keys: KeySpace;
  readonly #logger: Logger | undefined;
  readonly #now: () => number;
  /** model → version → aggregate */
  #pending = new Map<string, Map<string, Aggregate>>();
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> = Promise.resolve();

  constructor(options: {
    redis: RedisClient;
    keys: KeySpace;
    logger?: Logger;
    now?: () => number;
    flushEveryMs?: number;
  }) {
    this.#redis = options.redis;
    this.#keys = options.keys;
    this.#logger = options.logger;
    this.#now = options.now ?? Date.now;
    if (options.flushEveryMs !== 0) {
      this.#timer = setInterval(() => void this.flush(), options.flushEveryMs ?? 1000);
      this.#timer.unref();
    }
  }

  #aggregate(model: string, version: string, catalogModel?: CatalogModel): Aggregate {
    let versions = this.#pending.get(model);
    if (!versions) {
      versions = new Map();
      this.#pending.set(model, versions);
    }
    let a = versions.get(version);
    if (!a) {
      a = {
        model,
        version,
        n: { calls: 0, rows: 0, scored: 0, above: 0, known: 0, assumed: 0, lat_sum: 0, reviews: 0 },
        tiers: {},
        lat: new Array(LATENCY_EDGES_MS.length + 1).fill(0),
        score: new Array(SCORE_BINS).fill(0),
        features: undefined,
        decisions: { approve: 0, amend: 0, reject: 0 },
        feedback: { accepted: 0, overridden: 0, reasons: {} },
      };
      versions.set(version, a);
    }
    // the feature bins come with the first scoring (a review decision alone does not know the model's profile)
    if (a.features === undefined && catalogModel) a.features = featureBins(catalogModel, version);
    return a;
  }

  onScore(event: ScoreEvent): void {
    const { model, input, result } = event;
    const a = this.#aggregate(model.name, result.version, model);
    const rows = input.rows;
    a.n.calls++;
    a.n.rows += rows;
    a.tiers[event.tier] = (a.tiers[event.tier] ?? 0) + rows;
    a.n.lat_sum += event.ms;
    bump(a.lat, binOf(LATENCY_EDGES_MS, event.ms));
    if (input.assumedRows !== undefined) {
      a.n.known += rows;
      a.n.assumed += input.assumedRows;
    }
    const output = model.manifest.output;
    const [lo, hi] = scoreRange(output);
    const width = (hi - lo) / SCORE_BINS;
    for (const p of result.predictions) {
      // scoreOf's score and verdict, without its object per row
      const score = scoreValue(output, p);
      const above = aboveThreshold(output, p, score);
      if (!Number.isFinite(score)) continue;
      a.n.scored++;
      if (above) a.n.above++;
      bump(a.score, scoreBin(score, lo, width));
    }
    const features = a.features ?? [];
    const columns = features.length;
    for (let c = 0; c < columns; c++) {
      const f = features[c];
      if (!f) continue;
      for (let r = 0; r < rows; r++) bump(f.counts, binOf(f.edges, input.data[r * columns + c] as number));
    }
  }

  /** A clinician's decision on a held result of this version (amend and reject are overrides). */
  recordDecision(model: string, version: string, decision: ReviewDecision): void {
    const a = this.#aggregate(model, version);
    a.n.reviews++;
    a.decisions[decision]++;
  }

  /**
   * CDS Hooks feedback on a card this version's score made: an override (with the card's reason code, `other` for one
   * not offered, `none` without) counts in the version's override rate beside review amendments and rejections.
   */
  recordFeedback(model: string, version: string, outcome: 'accepted' | 'overridden', reason?: string): void {
    const f = this.#aggregate(model, version).feedback;
    f[outcome]++;
    if (outcome === 'overridden') f.reasons[reason ?? 'none'] = (f.reasons[reason ?? 'none'] ?? 0) + 1;
  }

  /**
   * Writes what was counted since the last flush: one script per model version, whose two buckets are in the model's
   * shard (one slot); a failure keeps nothing twice.
   */
  flush(): Promise<void> {
    this.#flushing = this.#flushing.then(() => this.#flush());
    return this.#flushing;
  }

  async #flush(): Promise<void> {
    if (this.#pending.size === 0) return;
    const pending = [...this.#pending.values()].flatMap((versions) => [...versions.values()]);
    this.#pending = new Map();
    const now = this.#now();
    await Promise.all(
      pending.map(async (a) => {
        const args = [String(TTL_SECONDS[FIVE_MINUTES]), String(TTL_SECONDS[HOUR])];
        for (const [field, value] of fieldsOf(a)) args.push(field, String(value));
        const shard = this.#keys.shard(a.model);
        const keys = [
          bucketKey(shard, a.version, FIVE_MINUTES, Math.floor(now / FIVE_MINUTES)),
          bucketKey(shard, a.version, HOUR, Math.floor(now / HOUR)),
        ];
        await this.#redis.eval(ADD, 2, ...keys, ...args);
      }),
    ).catch((err: Error) => this.#logger?.warn({ err: { message: err.message } }, 'monitoring flush failed'));
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush();
  }
}

function bump(counts: number[], i: number): void {
  counts[i] = (counts[i] ?? 0) + 1;
}

/** The non-zero counters of an aggregate as bucket fields (the names the report reads). */
function fieldsOf(a: Aggregate): Array<[string, number]> {
  const out: Array<[string, number]> = [];
  for (const [k, v] of Object.entries(a.n)) if (v !== 0) out.push([k, v]);
  for (const [tier, v] of Object.entries(a.tiers)) out.push([`tier:${tier}`, v]);
  const bins = (name: string, counts: readonly number[]) => {
    counts.forEach((v, i) => {
      if (v !== 0) out.push([`${name}:${i}`, v]);
    });
  };
  bins('lat', a.lat);
  bins('s', a.score);
  for (const f of a.features ?? []) if (f) bins(`f:${f.name}`, f.counts);
  for (const [d, v] of Object.entries(a.decisions)) if (v !== 0) out.push([`d:${d}`, v]);
  if (a.feedback.accepted !== 0) out.push(['cds:accepted', a.feedback.accepted]);
  if (a.feedback.overridden !== 0) out.push(['cds:overridden', a.feedback.overridden]);
  for (const [reason, v] of Object.entries(a.feedback.reasons)) out.push([`cds:reason:${reason}`, v]);
  return out;
}
