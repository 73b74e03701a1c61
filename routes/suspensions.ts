import { Hono } from 'hono';
import { type AppDeps, type AppEnv, resolveModel } from '../src/context.ts';
import { readJson, requireRole } from '../src/platform/http.ts';
import { asJsonObject, onlyFields } from '../src/platform/json-body.ts';

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
