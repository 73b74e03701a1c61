import { Hono } from 'hono';
import { z } from 'zod';
import { type AppContext, type AppDeps, type AppEnv, resolveModel } from '../src/context.ts';
import { Problem } from '../src/platform/errors.ts';
import { readJson, requireRole } from '../src/platform/http.ts';
import { bodyObject, compiledParser, type RouteDoc } from '../src/platform/openapi.ts';
import { secureHeaderRecord } from '../src/platform/secure-headers.ts';
import type { CatalogModel } from '../src/serving/catalog.ts';
import { SILENT_ACTION } from '../src/serving/scorer.ts';
import { acceptJob, jobAccepted } from './jobs.ts';
import { endpointFor } from './models.ts';

/**
 * Header naming the request's subject (a patient or encounter key): a canary split is sticky per subject. It is
 * hashed for routing and never logged.
 */
export const SUBJECT_HEADER = 'x-subject-key';

export function parseSubjectKey(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  if (header.length === 0 || header.length > 256)
    throw new Problem('invalid_header', `${SUBJECT_HEADER} must be 1-256 characters`);
  return header;
}

/** Header a caller uses to ask for a deadline shorter than the model's latency budget. */
export const DEADLINE_HEADER = 'x-request-timeout-ms';

/** One instance: the features of `GET /v1/models/{model}`, checked per model by the sync tier (errors with pointers). */
export const instanceDoc = z.unknown().meta({
  type: 'object',
  description: "one instance: the model's features by name (GET /v1/models/{model} lists them with types and ranges)",
});

export const predictRequest = bodyObject(
  {
    instances: z
      .array(instanceDoc, { error: '"instances" must be an array of objects' })
      .min(1, '"instances" is empty')
      .meta({ description: "at most the model's sync.maxInstances" }),
  },
  '{"instances": [...]}',
);

/** What a sync scoring can answer besides authentication: the same on every door to the sync tier (v1, OIP v2). */
export const SYNC_SCORING_ERRORS = [
  'invalid_input',
  'invalid_header',
  'batch_too_large',
  'model_not_found',
  'wrong_tier',
  'overloaded',
  'not_ready',
  'deadline_exceeded',
  'inference_failed',
  'upstream_failed',
] as const;

export const predictDocs: RouteDoc[] = [
  {
    method: 'post',
    path: '/v1/models/{model}/predict',
    summary: 'Score instances on a sync model (KServe v1 / Vertex shape); Prefer: respond-async makes it a job',
    tag: 'sync',
    auth: ['client'],
    body: predictRequest,
    responses: {
      200: {
        description: 'the predictions, with the model, version, owner, tier and threshold',
        schema: z.object({
          model: z.string(),
          version: z.string(),
          tier: z.string(),
          owner: z.object({ team: z.string(), contact: z.string().optional() }),
          requestId: z.string(),
          threshold: z.number(),
          fallback: z.boolean().optional(),
          fallbackFrom: z.string().optional(),
          predictions: z.array(z.record(z.string(), z.unknown())),
        }),
      },
      202: jobAccepted,
    },
    errors: SYNC_SCORING_ERRORS,
  },
];

/** `POST /v1/models/{model}/predict`: sync scoring in the KServe v1 / Vertex shape. */
export function predictRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  const parsePredict = compiledParser(predictRequest);

  app.post('/:model/predict', requireRole(deps, 'client'), async (c) => {
    const model = resolveModel(c, deps);
    const { manifest } = model;
    if (prefersAsync(c.req.header('prefer'))) {
      // the FHIR asynchronous request pattern: the same request, answered 202 + Location of a job
      const body = await readJson(c);
      const { idempotencyKey, callbackUrl, ...input } = (
        typeof body === 'object' && body !== null ? body : {}
      ) as Record<string, unknown>;
      return acceptJob(c, deps, {
        input,
        ...(callbackUrl !== undefined ? { callbackUrl } : {}),
        ...(idempotencyKey !== undefined ? { idempotencyKey } : {}),
      });
    }
    if (model.tier !== 'sync' || !manifest.sync) {
      const endpoint = Object.values(endpointFor(model))[0] as string;
      throw new Problem(
        'wrong_tier',
        `"${manifest.name}" is a ${model.tier} model: use ${endpoint} (or send Prefer: respond-async)`,
        {
          extensions: { tier: model.tier, endpoint },
          headers: { link: `<${endpoint}>; rel="alternate"` },
        },
      );
    }
    const deadlineMs = parseDeadline(c.req.header(DEADLINE_HEADER), manifest.sync.latencyBudgetMs);
    c.set('deadlineMs', deadlineMs);
    const { instances } = parsePredict(await readJson(c));
    if (instances.length > manifest.sync.maxInstances) {
      throw new Problem('batch_too_large', `at most ${manifest.sync.maxInstances} instances per request`);
    }

    const subjectKey = parseSubjectKey(c.req.header(SUBJECT_HEADER));
    const result = await deps.sync.predict(model, instances, deadlineMs, {
      requestId: c.get('requestId'),
      owner: c.get('principal')?.id,
      arrivedAt: c.get('arrivedAt'),
      ...(subjectKey ? { subjectKey } : {}),
    });
    const { predictions, version } = result;
    const requestId = c.get('requestId');
    return scoredResponse(c, model, version, {
      model: manifest.name,
      version,
      tier: model.tier,
      owner: manifest.owner,
      requestId,
      threshold: manifest.output.threshold,
      ...(result.fallback ? { fallback: true, fallbackFrom: result.fallback.from } : {}),
      ...(result.silent ? { silent: true, action: SILENT_ACTION } : {}),
      predictions,
    });
  });
  return app;
}

/**
 * A sync scoring's 200: the JSON body with the security headers, the request id and the model's name, version, tier
 * and owner. A plain Response with a header record stays on @hono/node-server's fast path (no Headers object), which
 * the bedside doors need; the middleware leaves its headers alone (`requestIdSent`).
 */
export function scoredResponse(c: AppContext, model: CatalogModel, version: string, body: unknown): Response {
  c.set('requestIdSent', true);
  const headers = secureHeaderRecord('application/json', c.get('requestId'));
  headers['x-model-name'] = model.manifest.name;
  headers['x-model-version'] = version;
  headers['x-model-tier'] = model.tier;
  headers['x-model-owner'] = model.manifest.owner.team;
  return new Response(JSON.stringify(body), { status: 200, headers });
}

function prefersAsync(prefer: string | undefined): boolean {
  return prefer?.split(',').some((p) => p.trim().toLowerCase() === 'respond-async') ?? false;
}

export function parseDeadline(header: string | undefined, budgetMs: number): number {
  if (header === undefined) return budgetMs;
  if (!/^\d{1,6}$/.test(header) || Number(header) < 1) {
    throw new Problem('invalid_header', `${DEADLINE_HEADER} must be a whole number of milliseconds ≥ 1`);
  }
  // a caller may shorten the budget, never lengthen it
  return Math.min(Number(header), budgetMs);
}
