import type { Manifest, Tier } from './schema.ts';

export interface Classification {
  tier: Tier;
  /** the facts that decided it, for the registry listing and startup errors */
  reasons: string[];
}

/**
 * The tier follows from the model's facts, not from a label: a declared tier that contradicts them is an error.
 * - batch: it only has schedules (no interactive use declared);
 * - async: it needs human review, takes documents, or its decision can wait longer than the sync ceiling;
 * - sync: otherwise.
 */
export function classifyTier(m: Manifest, syncCeilingMs: number): Classification {
  const interactive = m.sync !== undefined || m.decisionWindowMs !== undefined || m.review !== undefined;
  if ((m.schedules?.length ?? 0) > 0 && !interactive) {
    return { tier: 'batch', reasons: ['only has schedules'] };
  }
  const asyncReasons: string[] = [];
  if (m.review && m.review.policy !== 'never') asyncReasons.push(`review policy "${m.review.policy}"`);
  if (m.input === 'document') asyncReasons.push('takes documents');
  if (m.decisionWindowMs !== undefined && m.decisionWindowMs > syncCeilingMs) {
    asyncReasons.push(`decision window ${m.decisionWindowMs} ms exceeds the sync ceiling ${syncCeilingMs} ms`);
  }
  if (asyncReasons.length > 0) return { tier: 'async', reasons: asyncReasons };
  return {
    tier: 'sync',
    reasons: [
      m.decisionWindowMs !== undefined
        ? `decision window ${m.decisionWindowMs} ms within the sync ceiling ${syncCeilingMs} ms`
        : 'no review, no documents, no schedules',
    ],
  };
}
