import type { Logger } from 'pino';
import type { KeySpace } from '../platform/keyspace.ts';
import type { Metrics } from '../platform/metrics.ts';
import type { RedisClient } from '../platform/redis.ts';
import type { OutputSpec } from '../registry/schema.ts';
import type { Prediction } from './predictions.ts';

/** What a pair is compared on: a number and a decision at the approved threshold. No inputs, no identifiers. */
export interface Comparable {
  score: number;
  decision: string;
}

export function comparable(output: OutputSpec, p: Prediction): Comparable {
  if (output.kind === 'classification') {
    return {
      score: Number((p.probabilities as Record<string, number>)?.[output.labels[0] as string] ?? 0),
      decision: String(p.category),
    };
  }
  if (output.kind === 'retrieval') {
    const top = (p.matches as Array<{ id: string }> | undefined)?.[0]?.id ?? '';
    return { score: Number(p.confidence ?? 0), decision: top };
  }
  const score = Number(p[output.scoreName]);
  return { score, decision: score >= output.threshold ? 'positive' : 'negative' };
}

export interface ShadowPair {
  model: string;
  primaryVersion: string;
  shadowVersion: string;
  primary: Comparable[];
  shadow?: Comparable[];
  primaryMs: number;
  shadowMs: number;
  error?: string;
}

interface Aggregate {
  pairs: number;
  agree: number;
  /** the shadow decided positive (or a different class) where the primary did not */
  shadowPositive: number;
  shadowNegative: number;
  errors: number;
  sumAbsDiff: number;
  primaryMs: number[];
  shadowMs: number[];
  /** a sample of this interval's pairs, flat: primary score, shadow score, … (at most SCORE_PAIR_SAMPLES pairs) */
  scores: number[];
  /** pairs with finite scores seen this interval: the reservoir's denominator */
  scored: number;
  /** sampled mirrors not scored, by reason (src/serving/shadow-runner.ts sheds them) */
  shed: Record<string, number>;
}

const LATENCY_SAMPLES = 2000;
/**
 * Paired scores kept per model and shadow version for the scatter and Bland-Altman pictures: the latest this many
 * (a capped list; each flush adds a uniform sample of its interval's pairs). Two numbers a pair: no input, no
 * request id, no time, nothing that finds the patient again.
 */
export const SCORE_PAIR_SAMPLES = 1000;
/** A shadow that stopped being mirrored leaves no score sample behind for longer than this. */
const SCORE_PAIR_TTL_SECONDS = 8 * 24 * 3600;

/**
 * Records shadow pairs in Redis, in the model's shard (`{<base>:<model>}:shadow:…`: on a Redis Cluster on the model's
 * primary). Pairs are aggregated in memory and flushed once a second in one pipeline per model (a pipeline stays on
 * one shard), so mirroring all traffic costs Redis a few commands a second, not several per request. What is kept:
 * the counters, a capped sample of latencies and of paired scores; no pair as such (no input, no time, no id).
 */
export class ShadowRecorder {
  readonly #redis: RedisClient;
  readonly #keys: KeySpace;
  readonly #metrics: Metrics;
  readonly #logger: Logger;
  #pending = new Map<string, Aggregate>();
  #timer: NodeJS.Timeout | undefined;

  constructor(redis: RedisClient, keys: KeySpace, metrics: Metrics, logger: Logger, flushEveryMs = 1000) {
    this.#redis = redis;
    this.#keys = keys;
    this.#metrics = metrics;
    this.#logger = logger;
    this.#timer = setInterval(() => void this.flush(), flushEveryMs);
    this.#timer.unref();
  }

  #key(model: string, version: string, part: string): string {
    return `${this.#keys.shard(model)}:shadow:${version}:${part}`;
  }

  /** The shadow versions of a model that have pairs recorded. */
  #versionsKey(model: string): string {
    return `${this.#keys.shard(model)}:shadow:versions`;
  }

  #aggregate(model: string, version: string): Aggregate {
    const id = `${model}\u0000${version}`;
    let a = this.#pending.get(id);
    if (!a) {
      a = {
        pairs: 0,
        agree: 0,
        shadowPositive: 0,
        shadowNegative: 0,
        errors: 0,
        sumAbsDiff: 0,
        primaryMs: [],
        shadowMs: [],
        scores: [],
        scored: 0,
        shed: {},
      };
      this.#pending.set(id, a);
    }
    return a;
  }

  /** A sampled mirror of this shadow version that was not scored: in the metric and the report from the next flush. */
  shed(model: string, version: string, reason: string): void {
    const shed = this.#aggregate(model, version).shed;
    shed[reason] = (shed[reason] ?? 0) + 1;
  }

  record(pair: ShadowPair): void {
    const a = this.#aggregate(pair.model, pair.shadowVersion);
    // metrics are brought up to date at flush, from the aggregate: nothing per pair on the event loop but counting
    if (pair.error || !pair.shadow) {
      a.errors++;
      return;
    }
    a.primaryMs.push(pair.primaryMs);
    a.shadowMs.push(pair.shadowMs);
    pair.primary.forEach((p, i) => {
      const s = pair.shadow?.[i];
      if (!s) return;
      a.pairs++;
      a.sumAbsDiff += Math.abs(p.score - s.score);
      const agree = p.decision === s.decision;
      if (agree) a.agree++;
      else if (s.decision === 'positive' || (p.decision !== 'positive' && s.score > p.score)) a.shadowPositive++;
      else a.shadowNegative++;
      if (Number.isFinite(p.score) && Number.isFinite(s.score)) sample(a, p.score, s.score);
    });
  }

  /** Writes what accumulated since the last flush: one pipeline per model, on the model's shard. */
  async flush(): Promise<void> {
    if (this.#pending.size === 0) return;
    const pending = this.#pending;
    this.#pending = new Map();
    const pipes = new Map<string, ReturnType<RedisClient['pipeline']>>();
    for (const [id, a] of pending) {
      const [model, version] = id.split('\u0000') as [string, string];
      let pipe = pipes.get(model);
      if (!pipe) {
        pipe = this.#redis.pipeline();
        pipes.set(model, pipe);
      }
      const labels = { model, version };
      if (a.agree > 0) this.#metrics.shadowPairs.inc({ ...labels, agreement: 'agree' }, a.agree);
      if (a.pairs > a.agree) this.#metrics.shadowPairs.inc({ ...labels, agreement: 'disagree' }, a.pairs - a.agree);
      if (a.errors > 0) this.#metrics.shadowErrors.inc(labels, a.errors);
      const latency = this.#metrics.shadowLatency.labels(labels);
      for (const ms of a.shadowMs) latency.observe(ms / 1000);
      const stats = this.#key(model, version, 'stats');
      pipe.hincrby(stats, 'pairs', a.pairs);
      pipe.hincrby(stats, 'agree', a.agree);
      pipe.hincrby(stats, 'shadowPositive', a.shadowPositive);
      pipe.hincrby(stats, 'shadowNegative', a.shadowNegative);
      pipe.hincrby(stats, 'errors', a.errors);
      pipe.hincrbyfloat(stats, 'sumAbsDiff', a.sumAbsDiff);
      for (const [reason, n] of Object.entries(a.shed)) {
        this.#metrics.shadowDropped.inc({ model, reason }, n);
        pipe.hincrby(stats, `shed:${reason}`, n);
      }
      pipe.sadd(this.#versionsKey(model), version);
      for (const [part, samples] of [
        ['primaryMs', a.primaryMs],
        ['shadowMs', a.shadowMs],
      ] as const) {
        if (samples.length === 0) continue;
        const key = this.#key(model, version, part);
        pipe.lpush(key, ...samples.slice(-LATENCY_SAMPLES).map((v) => round(v)));
        pipe.ltrim(key, 0, LATENCY_SAMPLES - 1);
      }
      if (a.scores.length > 0) {
        const key = this.#key(model, version, 'scores');
        const pairs: string[] = [];
        for (let i = 0; i < a.scores.length; i += 2) pairs.push(`${score(a.scores[i])},${score(a.scores[i + 1])}`);
        pipe.lpush(key, ...pairs);
        pipe.ltrim(key, 0, SCORE_PAIR_SAMPLES - 1);
        pipe.expire(key, SCORE_PAIR_TTL_SECONDS);
      }
    }
    await Promise.all(
      [...pipes.values()].map((pipe) =>
        pipe.exec().catch((err: Error) => this.#logger.warn({ err: { message: err.message } }, 'shadow flush failed')),
      ),
    );
  }

  /** The comparison report of a model, per shadow version. */
  async report(model: string, threshold: number) {
    const versions = (await this.#redis.smembers(this.#versionsKey(model))).sort();
    const out = [];
    for (const version of versions) {
      const h = await this.#redis.hgetall(this.#key(model, version, 'stats'));
      const pairs = Number(h.pairs ?? 0);
      const latency = async (part: string) =>
        percentiles((await this.#redis.lrange(this.#key(model, version, part), 0, -1)).map(Number));
      out.push({
        version,
        pairs,
        agreementRate: pairs ? Number(h.agree ?? 0) / pairs : null,
        meanAbsoluteScoreDifference: pairs ? Number(h.sumAbsDiff ?? 0) / pairs : null,
        disagreements: {
          shadowPositivePrimaryNegative: Number(h.shadowPositive ?? 0),
          shadowNegativePrimaryPositive: Number(h.shadowNegative ?? 0),
        },
        shadowErrors: Number(h.errors ?? 0),
        // sampled mirrors not scored (the gateway under pressure, or the shadow at its bound), by reason
        shed: Object.fromEntries(
          Object.entries(h)
            .filter(([field]) => field.startsWith('shed:'))
            .map(([field, n]) => [field.slice('shed:'.length), Number(n)]),
        ),
        latencyMs: { shadow: await latency('shadowMs'), primary: await latency('primaryMs') },
      });
    }
    return { model, threshold, shadows: out };
  }

  /** The kept sample of paired scores of each shadow version of a model, newest first. */
  async scorePairs(model: string): Promise<Array<{ version: string; pairs: Array<[number, number]> }>> {
    const versions = (await this.#redis.smembers(this.#versionsKey(model))).sort();
    const pipe = this.#redis.pipeline();
    for (const version of versions) pipe.lrange(this.#key(model, version, 'scores'), 0, -1);
    const replies = (await pipe.exec()) ?? [];
    return versions.map((version, i) => {
      const [err, rows] = replies[i] ?? [];
      if (err) throw err;
      return {
        version,
        pairs: (rows as string[]).map((r) => r.split(',').map(Number) as [number, number]),
      };
    });
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.flush();
  }
}

function round(v: number): number {
  return Math.round(v * 1000) / 1000;
}

/** A score as the predictions carry it: six decimals (float32 holds about seven digits). */
function score(v: number | undefined): number {
  return Math.round((v as number) * 1e6) / 1e6;
}

/**
 * Keeps a uniform sample of an interval's pairs (reservoir sampling, algorithm R): the first SCORE_PAIR_SAMPLES
 * pairs, then each later one replaces a kept one with the chance that keeps every pair equally likely: bounded
 * memory and one list push per flush however much is mirrored.
 */
function sample(a: Aggregate, primary: number, shadow: number): void {
  a.scored++;
  if (a.scores.length < 2 * SCORE_PAIR_SAMPLES) {
    a.scores.push(primary, shadow);
    return;
  }
  const j = Math.floor(Math.random() * a.scored);
  if (j >= SCORE_PAIR_SAMPLES) return;
  a.scores[2 * j] = primary;
  a.scores[2 * j + 1] = shadow;
}

function percentiles(samples: number[]) {
  if (samples.length === 0) return null;
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)] as number;
  return { samples: sorted.length, p50: at(0.5), p95: at(0.95), p99: at(0.99) };
}
