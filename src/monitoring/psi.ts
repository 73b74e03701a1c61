/**
 * Population stability index (PSI) between a reference profile's bin shares and live bin counts:
 * Σ (actual − expected) · ln(actual / expected), shares floored at 1e-4 so an empty bin does not make it infinite.
 * By the usual reading, under 0.1 is stable, 0.1 to 0.25 a moderate shift, over 0.25 a major one.
 */
export const PSI_FLOOR = 1e-4;

/** The usual reading's cut points; over PSI_ALERT is what the alert rule pages on (TriageInputDrift). */
export const PSI_MODERATE = 0.1;
export const PSI_ALERT = 0.25;

/** The bin of an encoded value: how many edges are at or below it (binary search: edges ascend). */
export function binOf(edges: readonly number[], value: number): number {
  let lo = 0;
  let hi = edges.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((edges[mid] as number) <= value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export function psi(expected: readonly number[], counts: readonly number[]): number | undefined {
  let total = 0;
  for (const c of counts) total += c;
  if (total === 0) return undefined;
  let sum = 0;
  expected.forEach((e, i) => {
    const a = Math.max((counts[i] ?? 0) / total, PSI_FLOOR);
    const x = Math.max(e, PSI_FLOOR);
    sum += (a - x) * Math.log(a / x);
  });
  return sum;
}

/** Cut points at the deciles (by default) of reference values, strictly ascending (ties merge bins). */
export function quantileEdges(values: readonly number[], bins = 10): number[] {
  const sorted = [...values].sort((a, b) => a - b);
  const edges: number[] = [];
  for (let i = 1; i < bins; i++) {
    const q = sorted[Math.min(sorted.length - 1, Math.floor((i * sorted.length) / bins))] as number;
    if (edges.length === 0 || q > (edges[edges.length - 1] as number)) edges.push(q);
  }
  // a cut at the minimum would leave the first bin empty by construction
  return edges.filter((e) => e > (sorted[0] as number));
}

/** The share of values in each bin. */
export function shares(edges: readonly number[], values: readonly number[]): number[] {
  const counts = new Array<number>(edges.length + 1).fill(0);
  for (const v of values) counts[binOf(edges, v)] = (counts[binOf(edges, v)] as number) + 1;
  return counts.map((c) => c / values.length);
}
