import type { AppDeps } from '../context.ts';
import type { WindowName } from '../monitoring/windows.ts';
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
 * window: the same report as `GET /v1/models/{model}/monitoring`, its outcomes, and the version's hours.
 */
export async function monitoringPictures(deps: AppDeps, model: CatalogModel, windowName: WindowName): Promise<Panel[]> {
  const [report, series] = await Promise.all([
    deps.monitoring.report(model, [windowName]),
    deps.monitoring.series(model),
  ]);
  const versions: VersionFigures[] = [];
  for (const v of report.versions) {
    const window = v.windows[windowName];
    if (v.role === 'candidate' && window.rows === 0) continue;
    versions.push({
      version: v.version,
      role: v.role,
      windowName,
      window,
      referenceScores: model.loaded.profiles.get(v.version)?.output?.expected ?? null,
      series: series.find((s) => s.version === v.version)?.hours ?? [],
      outcomes: await deps.outcomes.figures(model, v.version),
    });
  }
  return monitoringPanels(model.manifest.output.threshold, versions);
}
