import type { RedisClient } from '../platform/redis.ts';
import { bucketKey, HOUR, WINDOWS } from './windows.ts';

/** One hour of one version: the counters a picture over time needs (all replicas and tiers together). */
export interface HourPoint {
  /** the hour's start (ISO time) */
  hour: string;
  rows: number;
  scored: number;
  above: number;
  reviews: number;
  approved: number;
  amended: number;
  rejected: number;
  /** CDS Hooks feedback on the version's cards */
  cdsAccepted: number;
  cdsOverridden: number;
  /** review decisions and card feedback: what the override rate is a share of */
  judgements: number;
  /** amended, rejected and overridden of the hour's judgements, as the monitoring report counts (null: none) */
  overrideRate: number | null;
}

const FIELDS = [
  'rows',
  'scored',
  'above',
  'reviews',
  'd:approve',
  'd:amend',
  'd:reject',
  'cds:accepted',
  'cds:overridden',
] as const;

/**
 * The last week hour by hour, oldest first: read from the hourly buckets the taps already write (kept eight days,
 * expiring), so a series costs the scoring path nothing. Only the few counters drawn are read (one HMGET a bucket,
 * one pipeline for the week).
 */
export async function hourlySeries(
  redis: RedisClient,
  /** the model's shard prefix (`keys.shard(model)`): the week's buckets are one slot, so one pipeline on a cluster */
  shard: string,
  version: string,
  now: number,
  hours = WINDOWS.week.buckets,
): Promise<HourPoint[]> {
  const current = Math.floor(now / HOUR);
  const ids = Array.from({ length: hours }, (_, i) => current - hours + 1 + i);
  const pipeline = redis.pipeline();
  for (const id of ids) pipeline.hmget(bucketKey(shard, version, HOUR, id), ...FIELDS);
  const replies = (await pipeline.exec()) ?? [];
  return ids.map((id, i) => {
    const [err, values] = replies[i] ?? [];
    if (err) throw err;
    const [rows, scored, above, reviews, approved, amended, rejected, cdsAccepted, cdsOverridden] = (
      values as Array<string | null>
    ).map(Number);
    const n = (v: number | undefined) => (Number.isFinite(v) ? (v as number) : 0);
    const point = {
      hour: new Date(id * HOUR).toISOString(),
      rows: n(rows),
      scored: n(scored),
      above: n(above),
      reviews: n(reviews),
      approved: n(approved),
      amended: n(amended),
      rejected: n(rejected),
      cdsAccepted: n(cdsAccepted),
      cdsOverridden: n(cdsOverridden),
    };
    const judgements = point.reviews + point.cdsAccepted + point.cdsOverridden;
    const overrides = point.amended + point.rejected + point.cdsOverridden;
    const overrideRate = judgements > 0 ? Math.round((overrides / judgements) * 1e6) / 1e6 : null;
    return { ...point, judgements, overrideRate };
  });
}
