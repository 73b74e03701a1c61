import { Hono } from 'hono';
import { type AppDeps, type AppEnv, resolveModel } from '../src/context.ts';
import { requireRole } from '../src/platform/http.ts';

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
