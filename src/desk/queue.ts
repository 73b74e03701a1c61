import type { JobRecord } from '../jobs/store.ts';
import type { Manifest } from '../registry/schema.ts';

/** The first prediction of a held job's output (async jobs score one input). */
export function predictionOf(record: JobRecord): Record<string, unknown> | undefined {
  const p = (record.output as { predictions?: unknown[] } | undefined)?.predictions?.[0];
  return typeof p === 'object' && p !== null ? (p as Record<string, unknown>) : undefined;
}

/**
 * The clinical rank of one hold under its model's declared priority (lower is more urgent). A model that declares
 * none ranks its holds with the most urgent: an undeclared model must never be buried below everything else.
 */
function modelRank(record: JobRecord, manifest: Manifest | undefined): number {
  const priority = manifest?.review?.priority;
  const p = predictionOf(record);
  if (!priority || !p) return 0;
  if (priority.by === 'category') {
    const i = priority.order.indexOf(String(p.category));
    return i === -1 ? priority.order.length : i;
  }
  const output = manifest.output;
  const score = output.kind === 'score' ? p[output.scoreName] : p.confidence;
  if (typeof score !== 'number') return 0;
  return priority.order === 'desc' ? -score : score;
}

/** Escalated holds first, then the model's clinical priority, then the oldest. */
export function byClinicalPriority(
  records: JobRecord[],
  manifestOf: (model: string) => Manifest | undefined,
): JobRecord[] {
  const keyed = records.map((r) => ({
    r,
    escalated: r.escalated ? 0 : 1,
    rank: modelRank(r, manifestOf(r.model)),
    held: r.heldAt ?? r.createdAt,
  }));
  keyed.sort((a, b) => a.escalated - b.escalated || a.rank - b.rank || a.held - b.held);
  return keyed.map((k) => k.r);
}
