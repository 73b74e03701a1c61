import type { ShadowRecorder } from '../serving/shadow.ts';
import { num, type Panel, pct, VEGA_LITE_SCHEMA } from './charts.ts';

/**
 * The shadow report as pictures: agreement and disagreements per shadow version, latency, and from the kept sample
 * of paired scores a scatter (shadow against primary, with the identity line) and a Bland-Altman plot (difference
 * against mean, with the mean difference and the 95 % limits of agreement).
 */
export type ShadowReport = Awaited<ReturnType<ShadowRecorder['report']>>;

/** The report's panels, then a scatter and a Bland-Altman plot per shadow version with a kept sample. */
export function shadowPanels(report: ShadowReport, samples: ScorePairs = []): Panel[] {
  if (report.shadows.length === 0) return [];
  const agreement = report.shadows.map((s) => ({
    version: `v${s.version}`,
    agreement: s.agreementRate ?? 0,
    pairs: s.pairs,
  }));
  const disagreements = report.shadows.flatMap((s) => [
    {
      version: `v${s.version}`,
      kind: 'shadow positive, primary negative',
      count: s.disagreements.shadowPositivePrimaryNegative,
    },
    {
      version: `v${s.version}`,
      kind: 'shadow negative, primary positive',
      count: s.disagreements.shadowNegativePrimaryPositive,
    },
    { version: `v${s.version}`, kind: 'shadow errors', count: s.shadowErrors },
  ]);
  const latency = report.shadows.flatMap((s) =>
    (['primary', 'shadow'] as const).flatMap((who) => {
      const l = s.latencyMs[who];
      return l
        ? (['p50', 'p95', 'p99'] as const).map((q) => ({ version: `v${s.version}`, who, quantile: q, ms: l[q] }))
        : [];
    }),
  );
  return [
    {
      id: 'agreement',
      title: 'Agreement with the primary',
      summary: report.shadows
        .map((s) => `v${s.version}: ${pct(s.agreementRate)} of ${s.pairs} pairs agree${shedNote(s.shed)}`)
        .join('; '),
      rows: agreement.map((a) => ({ version: a.version, agreement: pct(a.agreement), pairs: a.pairs })),
      spec: {
        $schema: VEGA_LITE_SCHEMA,
        width: 420,
        height: 40 * agreement.length,
        data: { values: agreement },
        mark: { type: 'bar', color: '#0b3d63' },
        encoding: {
          y: { field: 'version', type: 'nominal', title: 'shadow version' },
          x: {
            field: 'agreement',
            type: 'quantitative',
            title: 'agreement',
            scale: { domain: [0, 1] },
            axis: { format: '%' },
          },
        },
      },
    },
    {
      id: 'disagreements',
      title: 'Disagreements by direction',
      summary: disagreements.map((d) => `${d.version} ${d.kind}: ${d.count}`).join('; '),
      rows: disagreements,
      spec: {
        $schema: VEGA_LITE_SCHEMA,
        width: 420,
        height: 40 * report.shadows.length,
        data: { values: disagreements },
        mark: 'bar',
        encoding: {
          y: { field: 'version', type: 'nominal', title: 'shadow version' },
          x: { field: 'count', type: 'quantitative', title: 'pairs' },
          color: {
            field: 'kind',
            type: 'nominal',
            title: null,
            scale: { range: ['#b35806', '#542788', '#666666'] },
            legend: { labelLimit: 320, orient: 'bottom', direction: 'vertical' },
          },
        },
      },
    },
    {
      id: 'latency',
      title: 'Latency, primary against shadow',
      summary:
        latency.map((l) => `${l.version} ${l.who} ${l.quantile} ${l.ms} ms`).join('; ') || 'no latency samples yet',
      rows: latency,
      spec: {
        $schema: VEGA_LITE_SCHEMA,
        width: 120,
        height: 160,
        data: { values: latency },
        mark: 'bar',
        encoding: {
          column: { field: 'quantile', type: 'nominal', title: null },
          x: { field: 'who', type: 'nominal', title: null },
          y: { field: 'ms', type: 'quantitative', title: 'milliseconds' },
          color: { field: 'who', type: 'nominal', title: null, scale: { range: ['#0b3d63', '#b35806'] } },
        },
      },
    },
    ...samples.flatMap((s) => pairPanels(s.version, s.pairs)),
  ];
}

/** Mirrors not scored (shed for bedside traffic): the agreement covers the others only, so say how many. */
function shedNote(shed: Record<string, number>): string {
  const total = Object.values(shed).reduce((a, b) => a + b, 0);
  if (total === 0) return '';
  const reasons = Object.entries(shed)
    .map(([reason, n]) => `${n} ${reason}`)
    .join(', ');
  return ` (${total} ${total === 1 ? 'mirror' : 'mirrors'} shed for bedside traffic: ${reasons})`;
}

export type ScorePairs = Awaited<ReturnType<ShadowRecorder['scorePairs']>>;

export interface BlandAltman {
  pairs: number;
  /** mean of shadow − primary */
  meanDifference: number;
  /** sample standard deviation of the differences (null under two pairs) */
  sd: number | null;
  /** the 95 % limits of agreement, mean difference ∓ 1.96 SD (null under two pairs) */
  lower: number | null;
  upper: number | null;
}

/** Bland and Altman's limits of agreement of paired [primary, shadow] scores; undefined with no pairs. */
export function blandAltman(pairs: ReadonlyArray<readonly [number, number]>): BlandAltman | undefined {
  const n = pairs.length;
  if (n === 0) return undefined;
  let sum = 0;
  for (const [p, s] of pairs) sum += s - p;
  const mean = sum / n;
  if (n < 2) return { pairs: n, meanDifference: mean, sd: null, lower: null, upper: null };
  let squares = 0;
  for (const [p, s] of pairs) squares += (s - p - mean) ** 2;
  const sd = Math.sqrt(squares / (n - 1));
  return { pairs: n, meanDifference: mean, sd, lower: mean - 1.96 * sd, upper: mean + 1.96 * sd };
}

/** The scatter and the Bland-Altman plot of one shadow version's sample (none before its first pair). */
function pairPanels(version: string, pairs: ReadonlyArray<readonly [number, number]>): Panel[] {
  const ba = blandAltman(pairs);
  if (!ba) return [];
  const points = pairs.map(([primary, shadow]) => ({
    primary,
    shadow,
    mean: (primary + shadow) / 2,
    difference: shadow - primary,
  }));
  const lo = Math.min(...points.map((p) => Math.min(p.primary, p.shadow)));
  const hi = Math.max(...points.map((p) => Math.max(p.primary, p.shadow)));
  const lines = [
    { label: 'mean difference', value: ba.meanDifference },
    ...(ba.lower !== null && ba.upper !== null
      ? [
          { label: 'lower limit (−1.96 SD)', value: ba.lower },
          { label: 'upper limit (+1.96 SD)', value: ba.upper },
        ]
      : []),
  ];
  const limits =
    ba.lower === null ? 'too few pairs for limits' : `95 % limits of agreement ${num(ba.lower)} to ${num(ba.upper)}`;
  const axis = { type: 'quantitative' as const, scale: { zero: false, nice: true } };
  return [
    {
      id: `scatter-${version}`,
      title: `v${version} against the primary: paired scores`,
      summary:
        `${ba.pairs} pairs (the latest kept) of the primary's score and v${version}'s for the same rows; ` +
        `points on the diagonal agree exactly; mean difference (shadow − primary) ${num(ba.meanDifference)}`,
      rows: points.slice(0, 50).map((p) => ({ primary: num(p.primary), shadow: num(p.shadow) })),
      spec: {
        $schema: VEGA_LITE_SCHEMA,
        width: 320,
        height: 320,
        layer: [
          {
            data: { values: [{ a: lo }, { a: hi }] },
            mark: { type: 'line', color: '#666666', strokeDash: [4, 4] },
            encoding: { x: { field: 'a', ...axis, title: 'primary score' }, y: { field: 'a', ...axis } },
          },
          {
            data: { values: points },
            mark: { type: 'point', filled: true, opacity: 0.6, color: '#0b3d63' },
            encoding: {
              x: { field: 'primary', ...axis, title: 'primary score' },
              y: { field: 'shadow', ...axis, title: `shadow v${version} score` },
            },
          },
        ],
      },
    },
    {
      id: `bland-altman-${version}`,
      title: `v${version} against the primary: Bland-Altman`,
      summary: `${ba.pairs} pairs: mean difference (shadow − primary) ${num(ba.meanDifference)}; ${limits}`,
      rows: lines.map((l) => ({ line: l.label, value: num(l.value) })),
      spec: {
        $schema: VEGA_LITE_SCHEMA,
        width: 420,
        height: 280,
        layer: [
          {
            data: { values: points },
            mark: { type: 'point', filled: true, opacity: 0.6, color: '#0b3d63' },
            encoding: {
              x: { field: 'mean', ...axis, title: 'mean of primary and shadow' },
              y: { field: 'difference', ...axis, title: 'shadow − primary' },
            },
          },
          {
            data: { values: lines },
            mark: { type: 'rule', color: '#b35806', strokeDash: [6, 3] },
            encoding: { y: { field: 'value', type: 'quantitative' } },
          },
          {
            data: { values: lines },
            mark: { type: 'text', align: 'right', baseline: 'bottom', dy: -2, x: 'width', color: '#5a2d00' },
            encoding: {
              y: { field: 'value', type: 'quantitative' },
              text: { field: 'text' },
            },
            transform: [{ calculate: "datum.label + ' ' + format(datum.value, '.3f')", as: 'text' }],
          },
        ],
      },
    },
  ];
}
