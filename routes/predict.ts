import { Hono } from 'hono';
import { type AppDeps, type AppEnv, resolveModel } from '../src/context.ts';
import { Problem } from '../src/platform/errors.ts';
import { readJson, requireRole } from '../src/platform/http.ts';
import { asJsonObject, onlyFields } from '../src/platform/json-body.ts';
import { SECURE_HEADERS } from '../src/platform/secure-headers.ts';
import { SILENT_ACTION } from '../src/serving/scorer.ts';
import { acceptJob } from './jobs.ts';
import { endpointFor } from './models.ts';

/**
 * Header naming the request's subject (a patient or encounter key): a canary split is sticky per subject. It is
 * hashed for routing and never logged.
 */
export const SUBJECT_HEADER = 'x-subject-key';

function parseSubjectKey(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  if (header.length === 0 || header.length > 256)
    throw new Problem('invalid_header', `${SUBJECT_HEADER} must be 1-256 characters`);
  return header;
}

/** Header a caller uses to ask for a deadline shorter than the model's latency budget. */
export const DEADLINE_HEADER = 'x-request-timeout-ms';

/** `POST /v1/models/{model}/predict`: sync scoring in the KServe v1 / Vertex shape. */
export function predictRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();

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
    const body = asJsonObject(await readJson(c), '{"instances": [...]}');
    onlyFields(body, ['instances']);
    const { instances } = body;
    if (!Array.isArray(instances)) throw new Problem('invalid_request', '"instances" must be an array of objects');
    if (instances.length === 0) throw new Problem('invalid_request', '"instances" is empty');
    if (instances.length > manifest.sync.maxInstances) {
      throw new Problem('batch_too_large', `at most ${manifest.sync.maxInstances} instances per request`);
    }

    const subjectKey = parseSubjectKey(c.req.header(SUBJECT_HEADER));
    const result = await deps.sync.predict(model, instances, deadlineMs, {
      requestId: c.get('requestId'),
      ...(subjectKey ? { subjectKey } : {}),
    });
    const { predictions, version } = result;
    const requestId = c.get('requestId');
    c.set('requestIdSent', true);
    // a plain Response with a header record stays on @hono/node-server's fast path (no Headers object)
    return new Response(
      JSON.stringify({
        model: manifest.name,
        version,
        tier: model.tier,
        owner: manifest.owner,
        requestId,
        threshold: manifest.output.threshold,
        ...(result.fallback ? { fallback: true, fallbackFrom: result.fallback.from } : {}),
        ...(result.silent ? { silent: true, action: SILENT_ACTION } : {}),
        predictions,
      }),
      {
        status: 200,
        headers: {
          ...SECURE_HEADERS,
          'content-type': 'application/json',
          'x-request-id': requestId,
          'x-model-name': manifest.name,
          'x-model-version': version,
          'x-model-tier': model.tier,
          'x-model-owner': manifest.owner.team,
        },
      },
    );
  });
  return app;
}

function prefersAsync(prefer: string | undefined): boolean {
  return prefer?.split(',').some((p) => p.trim().toLowerCase() === 'respond-async') ?? false;
}

function parseDeadline(header: string | undefined, budgetMs: number): number {
  if (header === undefined) return budgetMs;
  if (!/^\d{1,6}$/.test(header) || Number(header) < 1) {
    throw new Problem('invalid_header', `${DEADLINE_HEADER} must be a whole number of milliseconds ≥ 1`);
  }
  // a caller may shorten the budget, never lengthen it
  return Math.min(Number(header), budgetMs);
}
