import { PSI_ALERT, PSI_MODERATE } from '../monitoring/psi.ts';
import type { WindowReport } from '../monitoring/report.ts';
import type { HourPoint } from '../monitoring/series.ts';
import type { OutcomeMetrics } from '../outcomes/metrics.ts';
import { num, type Panel, pct, VEGA_LITE_SCHEMA } from './charts.ts';

/** The day's override rate the alert rule pages on (k8s/monitoring/triage-rules.yaml, TriageOverrideRateHigh). */
export const OVERRIDE_ALERT = 0.3;

/** What one version's pictures are drawn from: its monitoring window, its hours, its outcomes, its reference. */
export interface VersionFigures {
  version: string;
  /** primary, canary, shadow or candidate */
  role: string;
  /** the window drawn (drift, and the scores of a version the taps see) and its name */
  windowName: string;
  window: WindowReport;
  /**
   * the scores drawn and where they come from: the window's histogram, or for a shadow (the taps see the versions
   * that answer, not the mirror) the shadow side of its kept pair sample, in the same bins
   */
  scores: {
    source: string;
    scored: number;
    aboveThresholdShare: number | null;
    histogram: WindowReport['output']['histogram'];
  };
  /** the version's scores on its reference data, as shares of the same histogram bins (none without a profile) */
  referenceScores: readonly number[] | null;
  series: readonly HourPoint[];
  outcomes: OutcomeMetrics;
}

const driftLevel = (psi: number) => (psi > PSI_ALERT ? 'major shift' : psi >= PSI_MODERATE ? 'moderate' : 'stable');

/**
 * The monitoring report as pictures, per version: the score distribution against the reference, drift per feature
 * (PSI with the alert level marked), the override rate hour by hour, and the outcome figures with calibration.
 * A picture with nothing to draw yet is left out, and the page says so.
 */
export function monitoringPanels(threshold: number, versions: readonly VersionFigures[]): Panel[] {
  return versions.flatMap((v) => [scorePanel(v, threshold), ...driftPanel(v), overridePanel(v), ...outcomePanels(v)]);
}

function scorePanel(v: VersionFigures, threshold: number): Panel {
  const { histogram, scored } = v.scores;
  const ref = v.referenceScores && v.referenceScores.length === histogram.length ? v.referenceScores : null;
  const bins = histogram.map((b, i) => ({
    from: b.from,
    to: b.to,
    mid: (b.from + b.to) / 2,
    live: scored > 0 ? b.count / scored : 0,
    reference: ref ? (ref[i] as number) : null,
  }));
  const largest = bins.reduce((a, b) => (b.live > a.live ? b : a), bins[0] as (typeof bins)[number]);
  return {
    id: `scores-${v.version}`,
    title: `v${v.version} (${v.role}): scores of ${v.scores.source} against the reference`,
    summary:
      scored === 0
        ? `v${v.version}: no scores in ${v.scores.source}`
        : `v${v.version}: ${scored} scores in ${v.scores.source}` +
          (v.scores.aboveThresholdShare === null
            ? ''
            : `, ${pct(v.scores.aboveThresholdShare)} at or above the threshold ${threshold}`) +
          `; most in ${num(largest.from)}–${num(largest.to)} ` +
          `(${pct(largest.live)})${ref ? `, where the reference has ${pct(largest.reference)}` : '; no reference scores'}`,
    rows: bins.map((b) => ({
      bin: `${num(b.from)}–${num(b.to)}`,
      live: pct(b.live, '–'),
      reference: pct(b.reference, '–'),
    })),
    spec: {
      $schema: VEGA_LITE_SCHEMA,
      width: 420,
      height: 220,
      layer: [
        {
          data: { values: bins },
          mark: { type: 'bar', color: '#0b3d63', opacity: 0.8 },
          encoding: {
            x: { field: 'from', type: 'quantitative', title: 'score', bin: { binned: true } },
            x2: { field: 'to' },
            y: { field: 'live', type: 'quantitative', title: 'share of scores', axis: { format: '%' } },
          },
        },
        ...(ref
          ? [
              {
                data: { values: bins },
                mark: { type: 'line' as const, color: '#b35806', point: { color: '#b35806' } },
                encoding: {
                  x: { field: 'mid', type: 'quantitative' as const },
                  y: { field: 'reference', type: 'quantitative' as const },
                },
              },
            ]
          : []),
        {
          data: { values: [{ threshold }] },
          mark: { type: 'rule', color: '#666666', strokeDash: [4, 4] },
          encoding: { x: { field: 'threshold', type: 'quantitative' } },
        },
      ],
    },
  };
}

function driftPanel(v: VersionFigures): Panel[] {
  const drift = v.window.drift;
  // no profile, or no rows in the window: an empty chart would say nothing the score picture does not
  if (!drift || drift.maxPsi === null) return [];
  const features = Object.entries(drift.features).map(([feature, f]) => ({
    feature,
    psi: f.psi ?? 0,
    level: f.psi === null ? 'no rows' : driftLevel(f.psi),
  }));
  const worst = features.filter((f) => f.level === 'major shift').map((f) => f.feature);
  return [
    {
      id: `drift-${v.version}`,
      title: `v${v.version}: input drift per feature (PSI, last ${v.windowName})`,
      summary:
        `v${v.version}: largest PSI ${num(drift.maxPsi)}; ` +
        (worst.length > 0 ? `over the alert level ${PSI_ALERT}: ${worst.join(', ')}` : `none over ${PSI_ALERT}`),
      rows: features.map((f) => ({ feature: f.feature, psi: num(f.psi), level: f.level })),
      spec: {
        $schema: VEGA_LITE_SCHEMA,
        width: 420,
        height: 24 * Math.max(features.length, 1),
        layer: [
          {
            data: { values: features },
            mark: 'bar',
            encoding: {
              y: { field: 'feature', type: 'nominal', title: null, sort: null },
              x: { field: 'psi', type: 'quantitative', title: 'PSI against the reference profile' },
              color: {
                field: 'level',
                type: 'nominal',
                title: null,
                scale: {
                  domain: ['stable', 'moderate', 'major shift', 'no rows'],
                  range: ['#0b3d63', '#b35806', '#a50026', '#999999'],
                },
                legend: { orient: 'bottom' },
              },
            },
          },
          {
            data: { values: [{ at: PSI_MODERATE }, { at: PSI_ALERT }] },
            mark: { type: 'rule', color: '#333333', strokeDash: [4, 4] },
            encoding: { x: { field: 'at', type: 'quantitative' } },
          },
        ],
      },
    },
  ];
}

function overridePanel(v: VersionFigures): Panel {
  const reviewed = v.series.filter((h) => h.judgements > 0);
  const reviews = reviewed.reduce((n, h) => n + h.judgements, 0);
  const overrides = reviewed.reduce((n, h) => n + h.amended + h.rejected + h.cdsOverridden, 0);
  const from = v.series[0]?.hour;
  const end = v.series[v.series.length - 1]?.hour;
  return {
    id: `overrides-${v.version}`,
    title: `v${v.version}: clinician overrides hour by hour (last ${v.series.length} hours)`,
    summary:
      reviews === 0
        ? `v${v.version}: no review decisions or card feedback in the last ${v.series.length} hours`
        : `v${v.version}: ${overrides} of ${reviews} clinician judgements (review decisions, CDS Hooks card ` +
          `feedback) amended, rejected or overridden ` +
          `(${pct(overrides / reviews)}) over ${reviewed.length} ${reviewed.length === 1 ? 'hour' : 'hours'} with judgements; the alert is at ${pct(OVERRIDE_ALERT)}`,
    rows: reviewed.map((h) => ({
      hour: h.hour,
      reviews: h.reviews,
      amended: h.amended,
      rejected: h.rejected,
      'cards accepted': h.cdsAccepted,
      'cards overridden': h.cdsOverridden,
      'override rate': pct(h.overrideRate, '–'),
    })),
    spec: {
      $schema: VEGA_LITE_SCHEMA,
      width: 520,
      height: 200,
      layer: [
        {
          data: { values: reviewed },
          mark: { type: 'line', color: '#0b3d63', point: { color: '#0b3d63' } },
          encoding: {
            x: {
              field: 'hour',
              type: 'temporal',
              title: 'hour (UTC)',
              scale: from && end ? { domain: [from, end] } : {},
            },
            y: {
              field: 'overrideRate',
              type: 'quantitative',
              title: 'overridden',
              scale: { domain: [0, 1] },
              axis: { format: '%' },
            },
          },
        },
        {
          data: { values: [{ at: OVERRIDE_ALERT }] },
          mark: { type: 'rule', color: '#a50026', strokeDash: [4, 4] },
          encoding: { y: { field: 'at', type: 'quantitative' } },
        },
      ],
    },
  };
}

function outcomePanels(v: VersionFigures): Panel[] {
  const o = v.outcomes;
  if (o.labelled === 0) return [];
  const figures = [
    { figure: 'sensitivity', value: o.sensitivity },
    { figure: 'specificity', value: o.specificity },
    { figure: 'PPV', value: o.ppv },
    { figure: 'Brier score', value: o.brier },
    { figure: 'AUROC', value: o.auroc },
  ].filter((f): f is { figure: string; value: number } => f.value !== null);
  const panels: Panel[] = [
    {
      id: `outcomes-${v.version}`,
      title: `v${v.version}: outcomes (${o.labelled} labelled, ${o.positives} positive)`,
      summary: `v${v.version}, ${o.labelled} predictions with an observed outcome: ${figures.map((f) => `${f.figure} ${num(f.value)}`).join(', ')}`,
      rows: figures.map((f) => ({ figure: f.figure, value: num(f.value) })),
      spec: {
        $schema: VEGA_LITE_SCHEMA,
        width: 420,
        height: 28 * Math.max(figures.length, 1),
        data: { values: figures },
        mark: { type: 'bar', color: '#0b3d63' },
        encoding: {
          y: { field: 'figure', type: 'nominal', title: null, sort: null },
          x: { field: 'value', type: 'quantitative', title: null, scale: { domain: [0, 1] } },
        },
      },
    },
  ];
  const bins = o.calibration ?? [];
  if (bins.length > 0) {
    panels.push({
      id: `calibration-${v.version}`,
      title: `v${v.version}: calibration, predicted against observed`,
      summary:
        `v${v.version}: ${bins.length} bins of predicted risk; ` +
        bins
          .map(
            (b) =>
              `${num(b.from)}–${num(b.to)}: predicted ${num(b.meanPredicted)}, observed ${num(b.observedRate)} (${b.count})`,
          )
          .join('; '),
      rows: bins.map((b) => ({
        bin: `${num(b.from)}–${num(b.to)}`,
        predictions: b.count,
        'mean predicted': num(b.meanPredicted),
        observed: num(b.observedRate),
      })),
      spec: {
        $schema: VEGA_LITE_SCHEMA,
        width: 300,
        height: 300,
        layer: [
          {
            data: { values: [{ a: 0 }, { a: 1 }] },
            mark: { type: 'line', color: '#666666', strokeDash: [4, 4] },
            encoding: {
              x: { field: 'a', type: 'quantitative', title: 'mean predicted risk', scale: { domain: [0, 1] } },
              y: { field: 'a', type: 'quantitative', title: 'observed rate', scale: { domain: [0, 1] } },
            },
          },
          {
            data: { values: bins },
            mark: { type: 'line', color: '#0b3d63', point: { filled: true, color: '#0b3d63' } },
            encoding: {
              x: { field: 'meanPredicted', type: 'quantitative' },
              y: { field: 'observedRate', type: 'quantitative' },
            },
          },
        ],
      },
    });
  }
  return panels;
}
