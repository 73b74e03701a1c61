import type { AppDeps } from '../context.ts';
import { scoreBin, scoreRange } from '../monitoring/recorder.ts';
import { SCORE_BINS, type WindowName } from '../monitoring/windows.ts';
import type { CatalogModel } from '../serving/catalog.ts';
import type { Panel } from './charts.ts';
import { monitoringPanels, type VersionFigures } from './monitoring-charts.ts';
import { shadowPanels } from './shadow-charts.ts';

/** The shadow comparison's pictures: the report's aggregates and the kept sample of paired scores. */
export async function shadowPictures(deps: AppDeps, model: CatalogModel): Promise<Panel[]> {
  const [report, samples] = await Promise.all([
    deps.shadow.report(model.name, model.manifest.output.threshold),
    deps.shadow.scorePairs(model.name),
  ]);
  return shadowPanels(report, samples);
}

/**
 * The monitoring pictures of every live version (primary, canary, shadow) and of any other version scored in the
 * window: the same report as `GET /v1/models/{model}/monitoring`, its outcomes, and the version's hours. The taps
 * count the versions that answer; a shadow's scores come from its kept pair sample instead.
 */
export async function monitoringPictures(deps: AppDeps, model: CatalogModel, windowName: WindowName): Promise<Panel[]> {
  const [report, series, samples] = await Promise.all([
    deps.monitoring.report(model, [windowName]),
    deps.monitoring.series(model),
    deps.shadow.scorePairs(model.name),
  ]);
  const versions: VersionFigures[] = [];
  for (const v of report.versions) {
    const window = v.windows[windowName];
    const sample = samples.find((s) => s.version === v.version)?.pairs ?? [];
    if (v.role === 'candidate' && window.rows === 0) continue;
    const mirrored = window.output.scored === 0 && sample.length > 0;
    versions.push({
      version: v.version,
      role: v.role,
      windowName,
      window,
      scores: mirrored
        ? {
            source: `the latest ${sample.length} mirrored pairs`,
            ...histogramOf(
              model,
              sample.map(([, s]) => s),
            ),
          }
        : { source: `the last ${windowName}`, ...window.output },
      referenceScores: model.loaded.profiles.get(v.version)?.output?.expected ?? null,
      series: series.find((s) => s.version === v.version)?.hours ?? [],
      outcomes: await deps.outcomes.figures(model, v.version),
    });
  }
  return monitoringPanels(model.manifest.output.threshold, versions);
}

/** Scores in the output histogram's bins, as the taps bin them. */
function histogramOf(model: CatalogModel, scores: readonly number[]) {
  const output = model.manifest.output;
  const [lo, hi] = scoreRange(output);
  const width = (hi - lo) / SCORE_BINS;
  const counts = new Array<number>(SCORE_BINS).fill(0);
  for (const s of scores) counts[scoreBin(s, lo, width)] = (counts[scoreBin(s, lo, width)] as number) + 1;
  // a class's or a match's threshold is a confidence, which the sample does not keep
  const above = output.kind === 'score' ? scores.filter((s) => s >= output.threshold).length : null;
  return {
    scored: scores.length,
    aboveThresholdShare: above === null ? null : Math.round((above / scores.length) * 1e6) / 1e6,
    histogram: counts.map((count, i) => ({ from: lo + i * width, to: lo + (i + 1) * width, count })),
  };
}

/**
 * A page's panels kept a few seconds for the pictures on it: the page reads Redis and computes its panels, and each
 * `<img>` request that follows draws its picture from that same read rather than reading the whole report again
 * (a page has up to a dozen pictures, and a dozen parallel reads on a busy process meet Redis's command timeout).
 * The picture is then exactly the one the page described. Keys are a report, a model and a window: bounded.
 */
export class PanelCache {
  readonly #entries = new Map<string, { at: number; panels: Promise<Panel[]> }>();
  readonly #ttlMs: number;
  readonly #now: () => number;

  constructor(ttlMs = 10_000, now: () => number = Date.now) {
    this.#ttlMs = ttlMs;
    this.#now = now;
  }

  /** Fresh panels (for a page), kept for its pictures. */
  load(key: string, load: () => Promise<Panel[]>): Promise<Panel[]> {
    const now = this.#now();
    for (const [k, e] of this.#entries) if (now - e.at > this.#ttlMs) this.#entries.delete(k);
    const entry = { at: now, panels: load() };
    this.#entries.set(key, entry);
    // a failed read is not kept: the next picture reads again
    entry.panels.catch(() => {
      if (this.#entries.get(key) === entry) this.#entries.delete(key);
    });
    return entry.panels;
  }

  /** The panels a page read a moment ago, or fresh ones when there are none (a picture opened on its own). */
  get(key: string, load: () => Promise<Panel[]>): Promise<Panel[]> {
    const entry = this.#entries.get(key);
    if (entry && this.#now() - entry.at <= this.#ttlMs) return entry.panels;
    return this.load(key, load);
  }
}
