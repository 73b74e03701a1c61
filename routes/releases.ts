import { Hono } from 'hono';
import { z } from 'zod';
import { type AppDeps, type AppEnv, resolveModel } from '../src/context.ts';
import { Problem } from '../src/platform/errors.ts';
import { readJson, requireRole } from '../src/platform/http.ts';
import { asJsonObject, onlyFields } from '../src/platform/json-body.ts';
import { bodyObject, parseBody, type RouteDoc } from '../src/platform/openapi.ts';

const REASON_MESSAGE = 'reason is required (1-2000 characters)';
const reason = z
  .string({ error: REASON_MESSAGE })
  .max(2000, REASON_MESSAGE)
  .refine((r) => r.trim().length > 0, REASON_MESSAGE)
  .meta({ description: 'why: recorded in the audit trail' });
const version = z.string({ error: 'version is required' });

export const promoteRequest = bodyObject({ version, reason });
export const rollbackRequest = bodyObject({ reason });
export const silentRequest = bodyObject({
  version: version.meta({ description: 'the version to run silent until it is promoted with evidence' }),
  reason,
});
export const canaryRequest = bodyObject({
  version: version.optional().meta({ description: 'required unless weight is 0' }),
  weight: z
    .number({ error: 'weight must be a number from 0 to 100 (percent of subjects)' })
    .min(0, 'weight must be a number from 0 to 100 (percent of subjects)')
    .max(100, 'weight must be a number from 0 to 100 (percent of subjects)')
    .meta({ description: 'percent of subjects (sticky per x-subject-key); 0 removes the canary' }),
  reason,
});
const SHADOW_MESSAGE = 'versions must be a list of up to 5 version ids ([] removes shadows)';
const SAMPLE_MESSAGE = 'sampleRate must be a number from 0 to 1';
export const shadowRequest = bodyObject({
  versions: z.array(z.string({ error: SHADOW_MESSAGE }), { error: SHADOW_MESSAGE }).max(5, SHADOW_MESSAGE),
  sampleRate: z
    .number({ error: SAMPLE_MESSAGE })
    .min(0, SAMPLE_MESSAGE)
    .max(1, SAMPLE_MESSAGE)
    .optional()
    .meta({ description: 'required unless versions is empty' }),
  reason,
});

const routingResponse = {
  200: {
    description: 'the routing now in force',
    schema: z.object({ routing: z.looseObject({ primary: z.string() }) }),
  },
};
const routingErrors = ['model_not_found', 'invalid_state', 'evidence_required'] as const;
const change = (path: string, method: 'post' | 'put', summary: string, body: z.ZodType): RouteDoc => ({
  method,
  path: `/v1/models/{model}/routing/${path}`,
  summary,
  tag: 'releases',
  auth: ['admin'],
  body,
  responses: routingResponse,
  errors: routingErrors,
});

export const releaseDocs: RouteDoc[] = [
  {
    method: 'get',
    path: '/v1/models/{model}/routing',
    summary: 'The routing in force: primary, canary, shadows',
    tag: 'releases',
    auth: ['admin'],
    responses: { 200: { description: 'routing', schema: z.object({ model: z.string(), routing: z.looseObject({}) }) } },
    errors: ['model_not_found'],
  },
  change('promote', 'post', 'Promote a version with release evidence to primary', promoteRequest),
  change('rollback', 'post', "Roll back to the primary's declared rollback target", rollbackRequest),
  change('canary', 'put', 'Set or remove the canary split', canaryRequest),
  change('silent', 'put', 'Run a version silent: it scores and is monitored, callers get no score', silentRequest),
  change('shadow', 'put', 'Set or remove shadow versions', shadowRequest),
  {
    method: 'get',
    path: '/v1/models/{model}/shadow',
    summary: 'The shadow comparison report (aggregates only)',
    tag: 'releases',
    auth: ['client', 'reviewer'],
    responses: { 200: { description: 'the report', schema: z.looseObject({}) } },
    errors: ['model_not_found'],
  },
  {
    method: 'post',
    path: '/v1/admin/reload',
    summary: 'Re-read the manifests and swap them in (the previous ones keep serving if they do not load)',
    tag: 'releases',
    auth: ['admin'],
    responses: {
      200: { description: 'the served name@versions', schema: z.object({ reloaded: z.array(z.string()) }) },
    },
    errors: ['invalid_manifest', 'not_found'],
  },
];

/**
 * Releases: the routing of a model (primary, canary split, shadows), changed by admins with a reason and audited; the
 * shadow comparison report; and a manifest reload.
 */
export function releaseRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  const admin = requireRole(deps, 'admin');

  app.get('/models/:model/routing', admin, (c) => {
    const model = resolveModel(c, deps);
    return c.json({ model: model.manifest.name, routing: model.routing });
  });

  app.post('/models/:model/routing/promote', admin, async (c) => {
    const model = resolveModel(c, deps);
    const body = parseBody(promoteRequest, await readJson(c));
    return c.json({ routing: await deps.releases.promote(c.get('principal')!, model, body.version, body.reason) });
  });

  app.post('/models/:model/routing/rollback', admin, async (c) => {
    const model = resolveModel(c, deps);
    const body = parseBody(rollbackRequest, await readJson(c));
    return c.json({ routing: await deps.releases.rollback(c.get('principal')!, model, body.reason) });
  });

  app.put('/models/:model/routing/canary', admin, async (c) => {
    const model = resolveModel(c, deps);
    const body = parseBody(canaryRequest, await readJson(c));
    return c.json({ routing: await deps.releases.setCanary(c.get('principal')!, model, body) });
  });

  app.put('/models/:model/routing/silent', admin, async (c) => {
    const model = resolveModel(c, deps);
    const body = asJsonObject(await readJson(c));
    onlyFields(body, ['version', 'reason']);
    return c.json({ routing: await deps.releases.setSilent(c.get('principal')!, model, body) });
  });

  app.put('/models/:model/routing/shadow', admin, async (c) => {
    const model = resolveModel(c, deps);
    const body = parseBody(shadowRequest, await readJson(c));
    return c.json({ routing: await deps.releases.setShadow(c.get('principal')!, model, body) });
  });

  // the comparison report: aggregates only, no inputs
  app.get('/models/:model/shadow', requireRole(deps, 'client', 'reviewer'), async (c) => {
    const model = resolveModel(c, deps);
    return c.json({
      ...(await deps.shadow.report(model.manifest.name, model.manifest.output.threshold)),
      routing: model.routing.shadow ?? null,
    });
  });

  app.post('/admin/reload', admin, async (c) => {
    if (!deps.reload) throw new Problem('not_found', 'manifest reload is not available in this process');
    // refused (bad manifests, an unapproved threshold change) or applied, it is audited with what changed
    const principal = c.get('principal')!;
    return c.json({ reloaded: await deps.reload({ id: principal.id, role: principal.role }) });
  });
  return app;
}
