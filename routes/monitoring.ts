import { Hono } from 'hono';
import { type AppDeps, type AppEnv, resolveModel } from '../src/context.ts';
import { requireRole } from '../src/platform/http.ts';
import type { RouteDoc } from '../src/platform/openapi.ts';

/**
 * Monitoring per model version: input drift, output distribution, assumed data, overrides, latency, and outcomes;
 * aggregates only.
 */
export function monitoringRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  app.get('/models/:model/monitoring', requireRole(deps, 'client', 'reviewer'), async (c) => {
    const model = resolveModel(c, deps);
    const report = await deps.monitoring.report(model);
    // outcomes joined to the predictions of each version, beside its monitoring windows
    const versions = await Promise.all(
      report.versions.map(async (v) => ({ ...v, outcomes: await deps.outcomes.figures(model, v.version) })),
    );
    return c.json({ recording: deps.monitoring.enabled, ...report, versions });
  });
  return app;
}

/** The document's description of these routes (routes/openapi.ts). */
export const monitoringDocs: RouteDoc[] = [
  {
    method: 'get',
    path: '/v1/models/{model}/monitoring',
    summary:
      'Monitoring per version: input drift (PSI), output distribution, assumed data, overrides, latency, outcomes',
    tag: 'monitoring',
    auth: ['client', 'reviewer'],
    responses: { 200: { description: 'the report per version, per window (hour, day, week)' } },
    errors: ['model_not_found'],
  },
];
