import { Hono } from 'hono';
import type { AppDeps, AppEnv } from '../src/context.ts';
import { readJson, requireRole } from '../src/platform/http.ts';
import { asJsonObject } from '../src/platform/json-body.ts';
import type { RouteDoc } from '../src/platform/openapi.ts';

/** Observed outcomes of predictions (by request id, job id or batch row): idempotent, validated, audited. */
export function outcomeRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  app.post('/outcomes', requireRole(deps, 'client', 'reviewer'), async (c) => {
    const body = asJsonObject(await readJson(c), '{"requestId"|"jobId"|"batch", "index"?, "outcome", "observedAt"}');
    const { created, outcome } = await deps.outcomes.record(c.get('principal')!, body);
    const { model, version, score, threshold, at, observedAt } = outcome;
    return c.json(
      {
        model,
        version,
        score,
        threshold,
        outcome: outcome.outcome,
        predictedAt: new Date(at).toISOString(),
        observedAt: new Date(observedAt).toISOString(),
        labelDelayHours: Math.round(((observedAt - at) / 3_600_000) * 1000) / 1000,
      },
      created ? 201 : 200,
    );
  });
  return app;
}

/** The document's description of these routes (routes/openapi.ts). */
export const outcomeDocs: RouteDoc[] = [
  {
    method: 'post',
    path: '/v1/outcomes',
    summary: 'Record the observed outcome of a prediction (by request id, job id or batch row); idempotent',
    tag: 'monitoring',
    auth: ['client', 'reviewer'],
    responses: { 201: { description: 'recorded' }, 200: { description: 'the same outcome was already recorded' } },
    errors: ['invalid_request', 'not_found'],
  },
];
