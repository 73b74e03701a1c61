import { Gauge } from 'prom-client';
import type { Metrics } from '../platform/metrics.ts';
import type { CatalogModel } from '../serving/catalog.ts';
import type { WindowReport } from './report.ts';
import type { WindowName } from './windows.ts';

type Reports = Array<{ model: string; versions: Array<{ version: string; windows: Record<string, WindowReport> }> }>;

/** Windows the gauges carry (the week is in the report). */
export const GAUGE_WINDOWS: readonly WindowName[] = ['hour', 'day'];

/**
 * The current monitoring figures as Prometheus gauges, read from the shared buckets at scrape time (every replica
 * reports the same values), computed once per scrape for all gauges. Labels: model, version, feature names from
 * the manifests, window: bounded, and nothing about a patient.
 */
export function registerMonitoringGauges(
  metrics: Metrics,
  source: {
    models: () => CatalogModel[];
    report: (m: CatalogModel, windows: readonly WindowName[]) => Promise<Reports[number]>;
  },
): void {
  let pending: { at: number; reports: Promise<Reports> } | undefined;
  const reports = (): Promise<Reports> => {
    // one read of Redis serves every gauge of the same scrape
    if (!pending || Date.now() - pending.at > 1000) {
      // Redis away: these series are absent from this scrape (as the queue gauges are), the rest is still served
      const reports = Promise.all(source.models().map((m) => source.report(m, GAUGE_WINDOWS))).catch(() => []);
      pending = { at: Date.now(), reports };
    }
    return pending.reports;
  };
  const gauge = (name: string, help: string, value: (w: WindowReport) => number | null | undefined) =>
    new Gauge({
      name,
      help,
      labelNames: ['model', 'version', 'window'] as const,
      registers: [metrics.registry],
      async collect() {
        this.reset();
        for (const r of await reports()) {
          for (const v of r.versions) {
            for (const [window, w] of Object.entries(v.windows)) {
              const x = value(w);
              if (x !== null && x !== undefined) this.set({ model: r.model, version: v.version, window }, x);
            }
          }
        }
      },
    });
  gauge(
    'triage_monitoring_rows',
    'Rows scored per model version in the window (every replica and tier)',
    (w) => w.rows,
  );
  gauge(
    'triage_monitoring_max_psi',
    'Largest input drift (PSI against the reference profile) over the features',
    (w) => w.drift?.maxPsi,
  );
  gauge(
    'triage_monitoring_above_threshold_share',
    'Share of scores at or above the approved threshold',
    (w) => w.output.aboveThresholdShare,
  );
  gauge(
    'triage_monitoring_assumed_share',
    'Share of rows with a missing value for which the default was assumed',
    (w) => w.missingOrAssumed.share,
  );
  gauge(
    'triage_monitoring_override_rate',
    'Share of clinician judgements that overrode the result: review amendments and rejections, overridden CDS Hooks cards',
    (w) => w.overrides.rate,
  );
  gauge('triage_monitoring_reviews', 'Clinician review decisions in the window', (w) => w.overrides.reviews);
  gauge(
    'triage_monitoring_judgements',
    'Clinician judgements in the window (review decisions and CDS Hooks card feedback): the override rate counts these',
    (w) => w.overrides.judgements,
  );
  gauge(
    'triage_monitoring_cds_overridden',
    'CDS Hooks cards of the version that clinicians overrode in the window',
    (w) => w.overrides.cdsFeedback.overridden,
  );
  new Gauge({
    name: 'triage_monitoring_feature_psi',
    help: 'Input drift per feature: PSI of the window against the version reference profile',
    labelNames: ['model', 'version', 'feature', 'window'] as const,
    registers: [metrics.registry],
    async collect() {
      this.reset();
      for (const r of await reports()) {
        for (const v of r.versions) {
          for (const [window, w] of Object.entries(v.windows)) {
            for (const [feature, f] of Object.entries(w.drift?.features ?? {})) {
              if (f.psi !== null) this.set({ model: r.model, version: v.version, feature, window }, f.psi);
            }
          }
        }
      }
    },
  });
}
