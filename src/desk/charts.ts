import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { ShadowRecorder } from '../serving/shadow.ts';

/**
 * Pictures of a model's reports, drawn on the server as SVG by Vega-Lite compiled with `vega` (no browser script, no
 * hand-drawn paths). Each report section maps to panels through one function of the report's own shape, so a new
 * report (per-version monitoring: drift, output distribution, overrides, outcomes) adds a function beside
 * `shadowPanels`, not a new page.
 */
export interface Panel {
  id: string;
  title: string;
  /** says in words what the picture shows: the image's alt text, for people who cannot see it */
  summary: string;
  spec: TopLevelSpec;
  /** the numbers drawn, shown as a table beside the picture */
  rows: Array<Record<string, string | number>>;
}

export type ShadowReport = Awaited<ReturnType<ShadowRecorder['report']>>;

const pct = (v: number | null) => (v === null ? 'no pairs yet' : `${(v * 100).toFixed(1)} %`);

export function shadowPanels(report: ShadowReport): Panel[] {
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
      summary: report.shadows.map((s) => `v${s.version}: ${pct(s.agreementRate)} of ${s.pairs} pairs agree`).join('; '),
      rows: agreement.map((a) => ({ version: a.version, agreement: pct(a.agreement), pairs: a.pairs })),
      spec: {
        $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
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
        $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
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
        $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
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
  ];
}

/** A Vega-Lite spec → an SVG document, rendered headless (no canvas, no DOM). */
export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}
