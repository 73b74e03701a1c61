import type { KeySpace } from '../platform/keyspace.ts';
import type { RedisClient } from '../platform/redis.ts';
import type { CatalogModel } from '../serving/catalog.ts';
import { psi } from './psi.ts';
import { scoreRange } from './recorder.ts';
import { bucketKey, LATENCY_EDGES_MS, SCORE_BINS, WINDOWS, type WindowName } from './windows.ts';

export interface WindowReport {
  /** the span the window's buckets cover (ISO times) */
  from: string;
  to: string;
  calls: number;
  rows: number;
  byTier: Record<string, number>;
  latencyMs: { mean: number; p50: number; p95: number; p99: number } | null;
  output: {
    scored: number;
    aboveThresholdShare: number | null;
    histogram: Array<{ from: number; to: number; count: number }>;
  };
  /** rows with a missing value for which the manifest's default was assumed, where the tier could tell */
  missingOrAssumed: { knownRows: number; assumedRows: number; share: number | null };
  /** PSI per feature against the version's reference profile (null without one) */
  drift: { features: Record<string, { psi: number | null; rows: number }>; maxPsi: number | null } | null;
  /**
   * Clinicians' judgements of the version's output: review decisions, and CDS Hooks feedback on its cards; the rate is
   * amended, rejected and overridden over all of them
   */
  overrides: {
    reviews: number;
    approved: number;
    amended: number;
    rejected: number;
    cdsFeedback: { accepted: number; overridden: number; reasons: Record<string, number> };
    judgements: number;
    rate: number | null;
  };
}

const round = (v: number, places = 6) => Math.round(v * 10 ** places) / 10 ** places;
const share = (n: number, d: number) => (d > 0 ? round(n / d) : null);

/** Reads the buckets of each window of one version (one pipeline, one shard) and sums them. */
async function readWindows(
  redis: RedisClient,
  shard: string,
  version: string,
  windows: readonly WindowName[],
  now: number,
): Promise<Record<string, { sum: Map<string, number>; from: number; to: number }>> {
  const plan = windows.map((w) => {
    const { bucketMs, buckets } = WINDOWS[w];
    const current = Math.floor(now / bucketMs);
    const ids = Array.from({ length: buckets }, (_, i) => current - i);
    return { w, bucketMs, ids, from: (current - buckets + 1) * bucketMs, to: (current + 1) * bucketMs };
  });
  // the day is the last 24 of the week's hourly buckets: each bucket is read once
  const keys = [...new Set(plan.flatMap((p) => p.ids.map((id) => bucketKey(shard, version, p.bucketMs, id))))];
  const pipeline = redis.pipeline();
  for (const k of keys) pipeline.hgetall(k);
  const replies = (await pipeline.exec()) ?? [];
  const byKey = new Map(keys.map((k, i) => [k, (replies[i]?.[1] ?? {}) as Record<string, string>]));
  const out: Record<string, { sum: Map<string, number>; from: number; to: number }> = {};
  for (const p of plan) {
    const sum = new Map<string, number>();
    for (const id of p.ids) {
      for (const [field, value] of Object.entries(byKey.get(bucketKey(shard, version, p.bucketMs, id)) ?? {})) {
        sum.set(field, (sum.get(field) ?? 0) + Number(value));
      }
    }
    out[p.w] = { sum, from: p.from, to: p.to };
  }
  return out;
}

function quantileMs(sum: Map<string, number>, calls: number, q: number): number {
  let seen = 0;
  for (let i = 0; i <= LATENCY_EDGES_MS.length; i++) {
    seen += sum.get(`lat:${i}`) ?? 0;
    // the bucket's upper bound (an overestimate by at most one bucket); past the last edge, the last edge
    if (seen >= q * calls) return LATENCY_EDGES_MS[Math.min(i, LATENCY_EDGES_MS.length - 1)] as number;
  }
  return LATENCY_EDGES_MS[LATENCY_EDGES_MS.length - 1] as number;
}

function windowReport(model: CatalogModel, version: string, w: { sum: Map<string, number>; from: number; to: number }) {
  const { sum } = w;
  const get = (f: string) => sum.get(f) ?? 0;
  const calls = get('calls');
  const [lo, hi] = scoreRange(model.manifest.output);
  const width = (hi - lo) / SCORE_BINS;
  const profile = model.loaded.profiles.get(version);
  let drift: WindowReport['drift'] = null;
  if (profile) {
    const features: Record<string, { psi: number | null; rows: number }> = {};
    let maxPsi: number | null = null;
    for (const [name, bins] of Object.entries(profile.features)) {
      const counts = bins.expected.map((_, i) => get(`f:${name}:${i}`));
      const value = psi(bins.expected, counts);
      features[name] = { psi: value === undefined ? null : round(value), rows: counts.reduce((a, b) => a + b, 0) };
      if (value !== undefined && (maxPsi === null || value > maxPsi)) maxPsi = round(value);
    }
    drift = { features, maxPsi };
  }
  const reviews = get('reviews');
  const feedback = { accepted: get('cds:accepted'), overridden: get('cds:overridden') };
  const judgements = reviews + feedback.accepted + feedback.overridden;
  const reasons: Record<string, number> = {};
  for (const [field, n] of sum) if (field.startsWith('cds:reason:')) reasons[field.slice('cds:reason:'.length)] = n;
  const byTier: Record<string, number> = {};
  for (const tier of ['sync', 'async', 'batch']) if (get(`tier:${tier}`) > 0) byTier[tier] = get(`tier:${tier}`);
  const report: WindowReport = {
    from: new Date(w.from).toISOString(),
    to: new Date(w.to).toISOString(),
    calls,
    rows: get('rows'),
    byTier,
    latencyMs:
      calls > 0
        ? {
            mean: round(get('lat_sum') / calls, 3),
            p50: quantileMs(sum, calls, 0.5),
            p95: quantileMs(sum, calls, 0.95),
            p99: quantileMs(sum, calls, 0.99),
          }
        : null,
    output: {
      scored: get('scored'),
      aboveThresholdShare: share(get('above'), get('scored')),
      histogram: Array.from({ length: SCORE_BINS }, (_, i) => ({
        from: round(lo + i * width),
        to: round(lo + (i + 1) * width),
        count: get(`s:${i}`),
      })),
    },
    missingOrAssumed: {
      knownRows: get('known'),
      assumedRows: get('assumed'),
      share: share(get('assumed'), get('known')),
    },
    drift,
    overrides: {
      reviews,
      approved: get('d:approve'),
      amended: get('d:amend'),
      rejected: get('d:reject'),
      cdsFeedback: { ...feedback, reasons },
      judgements,
      rate: share(get('d:amend') + get('d:reject') + feedback.overridden, judgements),
    },
  };
  return report;
}

/** The monitoring figures of every version of a model, per window, read from the model's shard. Aggregates only. */
export async function monitoringReport(
  redis: RedisClient,
  keys: KeySpace,
  model: CatalogModel,
  options: { windows?: readonly WindowName[]; now?: number } = {},
) {
  const windows = options.windows ?? (['hour', 'day', 'week'] as const);
  const now = options.now ?? Date.now();
  const versions = await Promise.all(
    model.manifest.versions.map(async (v) => {
      const sums = await readWindows(redis, keys.shard(model.name), v.version, windows, now);
      const profile = model.loaded.profiles.get(v.version);
      return {
        version: v.version,
        role: roleOf(model, v.version),
        referenceProfile: profile ? { source: profile.source, rows: profile.rows } : null,
        windows: Object.fromEntries(
          windows.map((w) => [w, windowReport(model, v.version, sums[w] as never)]),
        ) as Record<WindowName, WindowReport>,
      };
    }),
  );
  return {
    model: model.name,
    threshold: model.manifest.output.threshold,
    generatedAt: new Date(now).toISOString(),
    versions,
  };
}

function roleOf(model: CatalogModel, version: string): string {
  const r = model.routing;
  if (r.primary === version) return 'primary';
  if (r.canary?.version === version) return 'canary';
  if (r.shadow?.versions.includes(version)) return 'shadow';
  return 'candidate';
}
