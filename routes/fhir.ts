import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { z } from 'zod';
import { type AppContext, type AppDeps, type AppEnv, resolveModel } from '../src/context.ts';
import { capabilityStatement } from '../src/fhir/capability.ts';
import { onePatient, readingsRefused } from '../src/fhir/one-patient.ts';
import { outcomeResponse } from '../src/fhir/operation-outcome.ts';
import { riskAssessment, silentRiskAssessment } from '../src/fhir/risk-assessment.ts';
import { Problem } from '../src/platform/errors.ts';
import { readJson, requireRole } from '../src/platform/http.ts';
import { asJsonObject } from '../src/platform/json-body.ts';
import type { RouteDoc } from '../src/platform/openapi.ts';
import { secureHeaderRecord } from '../src/platform/secure-headers.ts';

const MAX_ENTRIES = 5000;

export const fhirDocs: RouteDoc[] = [
  {
    method: 'get',
    path: '/fhir/metadata',
    summary: 'The FHIR door’s CapabilityStatement',
    tag: 'fhir',
    auth: 'public',
    responses: { 200: { description: 'an R4 CapabilityStatement', type: 'application/fhir+json' } },
    errorShape: 'operation-outcome',
  },
  {
    method: 'post',
    path: '/fhir/RiskAssessment/$predict',
    summary: 'Score one patient’s Bundle (Observations and Patient) through the FHIR mapping: a RiskAssessment',
    tag: 'fhir',
    auth: ['client'],
    bodyType: 'application/fhir+json',
    query: { model: { schema: z.string(), description: 'the sync model to score with' } },
    responses: { 200: { description: 'an R4 RiskAssessment (not stored)', type: 'application/fhir+json' } },
    errors: [
      'insufficient_data',
      'invalid_input',
      'invalid_request',
      'model_not_found',
      'wrong_tier',
      'overloaded',
      'deadline_exceeded',
    ],
    errorShape: 'operation-outcome',
  },
];

/**
 * The synchronous FHIR door: `POST /fhir/RiskAssessment/$predict?model=<name>` takes one patient's Bundle (their
 * Observations and Patient), reads it through the manifest's FHIR mapping and scores it on the sync tier, answering a
 * RiskAssessment; `GET /fhir/metadata` is the CapabilityStatement. Every error is an OperationOutcome.
 */
export function fhirRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  app.onError((err, c) => {
    if (err instanceof Problem) return outcomeResponse(c, err);
    if (err instanceof HTTPException && err.status < 500)
      return outcomeResponse(c, new Problem('invalid_request', err.message));
    throw err;
  });

  app.get('/metadata', (c) => fhirJson(c, capabilityStatement(deps.catalog.list(), new URL('/fhir', c.req.url).href)));

  app.post('/RiskAssessment/$predict', requireRole(deps, 'client'), async (c) => {
    const model = resolveModel(c, deps, c.req.query('model') ?? '');
    const { manifest } = model;
    if (model.tier !== 'sync' || !manifest.sync || manifest.input !== 'features' || manifest.output.kind !== 'score') {
      throw new Problem('wrong_tier', `"${manifest.name}" is not a bedside score: it has no RiskAssessment here`);
    }
    const bundle = asJsonObject(await readJson(c), 'a FHIR Bundle of one patient’s Observations and Patient');
    if (bundle.resourceType !== 'Bundle' || !Array.isArray(bundle.entry)) {
      throw new Problem('invalid_request', 'the body must be a FHIR Bundle with entries');
    }
    if (bundle.entry.length > MAX_ENTRIES) throw new Problem('batch_too_large', `at most ${MAX_ENTRIES} entries`);
    const resources = bundle.entry.map((e, i) => {
      const r = (e as { resource?: unknown } | null)?.resource;
      if (typeof r !== 'object' || r === null || Array.isArray(r))
        throw new Problem('invalid_request', `entry[${i}] has no resource`);
      return r as Record<string, unknown>;
    });
    const asOf = Date.now();
    const { row, unread } = onePatient(manifest, resources, asOf);
    // a reading that cannot be placed (no subject, no time) may be the one that matters: say so rather than score
    // around it
    if (unread.length > 0) {
      throw new Problem('invalid_input', `resources that cannot be read: ${unread.slice(0, 5).join('; ')}`);
    }
    if (!row.values) throw new Problem('insufficient_data', `${row.id}: ${row.error}`);
    const result = await deps.sync
      .predict(model, [row.values], manifest.sync.latencyBudgetMs, {
        subjectKey: row.id,
        // what an outcome reported later names the prediction by (`request:<id>#0`), as on the v1 door
        requestId: c.get('requestId'),
        owner: c.get('principal')?.id,
      })
      .catch((err: unknown) => {
        throw readingsRefused(err);
      });
    const made = { runId: c.get('requestId'), manifest, version: result.version, asOf, row };
    // a silent deployment scored (and recorded) the patient but shows no score, on this door as on every other
    const resource = result.silent
      ? silentRiskAssessment(made)
      : riskAssessment({ ...made, prediction: result.predictions[0] as Record<string, unknown> });
    return fhirJson(c, resource, {
      'x-model-name': manifest.name,
      'x-model-version': result.version,
      'x-model-tier': model.tier,
      'x-model-owner': manifest.owner.team,
    });
  });

  app.all('*', () => {
    throw new Problem('not_found', 'no such FHIR interaction: GET /fhir/metadata lists what is served');
  });
  return app;
}

function fhirJson(c: AppContext, body: unknown, headers: Record<string, string> = {}): Response {
  const requestId = c.get('requestId');
  c.set('requestIdSent', true);
  const record = secureHeaderRecord('application/fhir+json', requestId);
  for (const name in headers) record[name] = headers[name] as string;
  return new Response(JSON.stringify(body), { status: 200, headers: record });
}
