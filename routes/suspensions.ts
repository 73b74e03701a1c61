import { Hono } from 'hono';
import { type AppDeps, type AppEnv, resolveModel } from '../src/context.ts';
import { readJson, requireRole } from '../src/platform/http.ts';
import { asJsonObject, onlyFields } from '../src/platform/json-body.ts';
import type { RouteDoc } from '../src/platform/openapi.ts';

/**
 * The kill switch of a model or one version: suspend with a reason, resume with a reason. Reviewers (the clinicians
 * who see harm first) and admins may suspend; only admins may resume.
 */
export function suspensionRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();

  app.get('/models/:model/suspension', requireRole(deps, 'client', 'reviewer'), (c) => {
    const model = resolveModel(c, deps);
    return c.json({ model: model.name, suspensions: deps.killSwitch.status(model) });
  });

  app.post('/models/:model/suspend', requireRole(deps, 'reviewer'), async (c) => {
    const model = resolveModel(c, deps);
    const body = asJsonObject(await readJson(c), '{"reason", "version"?}');
    onlyFields(body, ['version', 'reason']);
    return c.json({ suspension: await deps.killSwitch.suspend(c.get('principal')!, model, body) }, 201);
  });

  app.post('/models/:model/resume', requireRole(deps, 'admin'), async (c) => {
    const model = resolveModel(c, deps);
    const body = asJsonObject(await readJson(c), '{"reason", "version"?}');
    onlyFields(body, ['version', 'reason']);
    return c.json({ resumed: await deps.killSwitch.resume(c.get('principal')!, model, body) });
  });
  return app;
}

/** The document's description of these routes (routes/openapi.ts). */
export const suspensionDocs: RouteDoc[] = [
  {
    method: 'get',
    path: '/v1/models/{model}/suspension',
    summary: 'The suspensions in force (kill switch)',
    tag: 'releases',
    auth: ['client', 'reviewer'],
    responses: { 200: { description: 'the model and version suspensions' } },
    errors: ['model_not_found'],
  },
  {
    method: 'post',
    path: '/v1/models/{model}/suspend',
    summary: 'Suspend a model or one version, with a reason: no score until resumed',
    tag: 'releases',
    auth: ['reviewer'],
    responses: { 200: { description: 'the suspension in force' } },
    errors: ['model_not_found', 'invalid_request'],
  },
  {
    method: 'post',
    path: '/v1/models/{model}/resume',
    summary: 'Lift a suspension, with a reason',
    tag: 'releases',
    auth: ['admin'],
    responses: { 200: { description: 'the suspensions left' } },
    errors: ['model_not_found', 'invalid_request', 'invalid_state'],
  },
];
