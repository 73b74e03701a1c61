import { Hono } from 'hono';
import type { AppDeps, AppEnv } from '../src/context.ts';
import { readJson, requireRole } from '../src/platform/http.ts';
import { asJsonObject } from '../src/platform/json-body.ts';
import type { RouteDoc } from '../src/platform/openapi.ts';

/** Observed outcomes of predictions (by request id, job id, batch row or HL7 message): idempotent, validated, audited. */
export function outcomeRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  app.post('/outcomes', requireRole(deps, 'client', 'reviewer'), async (c) => {
    const body = asJsonObject(
      await readJson(c),
      '{"requestId"|"jobId"|"batch"|"hl7", "index"?, "outcome", "observedAt"}',
    );
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
    summary:
      'Record the observed outcome of a prediction (by request id, job id, batch row or HL7v2 message); idempotent',
    description:
      'Name the prediction by exactly one of: `requestId` (the X-Request-Id answered by /v1 predict, OIP v2 infer, ' +
      'the FHIR door, CDS Hooks and POST /v1/hl7; `index` the instance, default 0), `jobId` (+ `index`), ' +
      '`batch: {runId, rowId}`, or `hl7: {controlId, sendingApplication?, sendingFacility?}` (an HL7v2 ORU^R01 ' +
      'scored over MLLP or HTTP: its MSH-10, MSH-3 and MSH-4 as sent; the ACK echoes the control id in MSA-2). ' +
      'A message sent over HTTP can be named either way: both name one prediction and one outcome.',
    tag: 'monitoring',
    auth: ['client', 'reviewer'],
    responses: { 201: { description: 'recorded' }, 200: { description: 'the same outcome was already recorded' } },
    errors: ['invalid_request', 'not_found', 'awaiting_review', 'invalid_state'],
  },
];
