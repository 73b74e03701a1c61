/**
 * Where monitoring aggregates live in Redis: one hash per model version per time bucket, its fields counters, in the
 * model's shard (`{<base>:<model>}`, src/platform/keyspace.ts), so on a Redis Cluster a model's counters are written
 * on that model's primary. Five minute buckets (kept two hours) make the hour window; hourly buckets (kept eight days)
 * make the day and the week. Every replica and worker adds to the same buckets, so a window counts all their traffic.
 */
export const FIVE_MINUTES = 5 * 60_000;
export const HOUR = 60 * 60_000;

export type WindowName = 'hour' | 'day' | 'week';

/** Each window: the bucket size and how many buckets back from the current one (inclusive) it spans. */
export const WINDOWS: Record<WindowName, { bucketMs: number; buckets: number }> = {
  hour: { bucketMs: FIVE_MINUTES, buckets: 12 },
  day: { bucketMs: HOUR, buckets: 24 },
  week: { bucketMs: HOUR, buckets: 168 },
};

export const TTL_SECONDS = { [FIVE_MINUTES]: 2 * 3600, [HOUR]: 8 * 24 * 3600 } as const;

/** A bucket of one version; `shard` is the model's shard prefix (`keys.shard(model)`). */
export function bucketKey(shard: string, version: string, bucketMs: number, bucket: number): string {
  return `${shard}:monitor:${version}:${bucketMs === HOUR ? '1h' : '5m'}:${bucket}`;
}

/** Latency bucket upper bounds, ms (the last bucket is everything slower). */
export const LATENCY_EDGES_MS = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000];

/** Output histogram: equal-width bins over the score's range. */
export const SCORE_BINS = 10;
