import { Hono } from 'hono';
import { type AppDeps, type AppEnv, resolveModel } from '../src/context.ts';
import { Problem } from '../src/platform/errors.ts';
import { readJson, requireRole } from '../src/platform/http.ts';
import { asJsonObject, onlyFields } from '../src/platform/json-body.ts';

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
    const body = asJsonObject(await readJson(c));
    onlyFields(body, ['version', 'reason']);
    return c.json({ routing: await deps.releases.promote(c.get('principal')!, model, body.version, body.reason) });
  });

  app.post('/models/:model/routing/rollback', admin, async (c) => {
    const model = resolveModel(c, deps);
    const body = asJsonObject(await readJson(c));
    onlyFields(body, ['reason']);
    return c.json({ routing: await deps.releases.rollback(c.get('principal')!, model, body.reason) });
  });

  app.put('/models/:model/routing/canary', admin, async (c) => {
    const model = resolveModel(c, deps);
    const body = asJsonObject(await readJson(c));
    onlyFields(body, ['version', 'weight', 'reason']);
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
    const body = asJsonObject(await readJson(c));
    onlyFields(body, ['versions', 'sampleRate', 'reason']);
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
