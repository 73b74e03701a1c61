import { Gauge } from 'prom-client';
import type { Metrics } from '../platform/metrics.ts';
import type { CatalogModel } from '../serving/catalog.ts';
import type { OutcomeMetrics } from './metrics.ts';

/** How long computed outcome figures serve scrapes: outcomes arrive slowly, and reading them is not free. */
const CACHE_MS = 60_000;

/**
 * The outcome figures per model version as gauges (labelled outcomes, sensitivity, PPV, Brier, AUROC), for the
 * dashboards and alerts: computed from the shared outcome lists at scrape time, at most once a minute.
 */
export function registerOutcomeGauges(
  metrics: Metrics,
  source: { models: () => CatalogModel[]; figures: (m: CatalogModel, version: string) => Promise<OutcomeMetrics> },
): void {
  let cached: { at: number; rows: Promise<Array<{ model: string; version: string; f: OutcomeMetrics }>> } | undefined;
  const rows = () => {
    if (!cached || Date.now() - cached.at > CACHE_MS) {
      const all = source.models().flatMap((m) =>
        m.manifest.versions.map(async (v) => ({
          model: m.name,
          version: v.version,
          f: await source.figures(m, v.version),
        })),
      );
      // Redis away: absent from this scrape, asked again at the next (not cached for a minute)
      cached = { at: Date.now(), rows: Promise.all(all) };
      cached.rows.catch(() => {
        cached = undefined;
      });
    }
    return cached.rows;
  };
  const gauge = (name: string, help: string, value: (f: OutcomeMetrics) => number | null) =>
    new Gauge({
      name,
      help,
      labelNames: ['model', 'version'] as const,
      registers: [metrics.registry],
      async collect() {
        this.reset();
        for (const r of await rows().catch(() => [])) {
          const x = r.f.labelled > 0 ? value(r.f) : null;
          if (x !== null) this.set({ model: r.model, version: r.version }, x);
        }
      },
    });
  gauge('triage_outcome_labelled', 'Predictions with an observed outcome recorded (kept outcomes)', (f) => f.labelled);
  gauge('triage_outcome_sensitivity', 'Sensitivity at the threshold approved when predicting', (f) => f.sensitivity);
  gauge('triage_outcome_ppv', 'Positive predictive value at the threshold approved when predicting', (f) => f.ppv);
  gauge('triage_outcome_brier', 'Brier score (scores that are probabilities)', (f) => f.brier);
  gauge('triage_outcome_auroc', 'AUROC (once there are enough labels of each class)', (f) => f.auroc);
}
