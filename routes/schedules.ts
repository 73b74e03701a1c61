import { Hono } from 'hono';
import { z } from 'zod';
import type { AppDeps, AppEnv } from '../src/context.ts';
import { Problem } from '../src/platform/errors.ts';
import { readJson, requireRole } from '../src/platform/http.ts';
import { asJsonObject } from '../src/platform/json-body.ts';
import type { RouteDoc } from '../src/platform/openapi.ts';
import { scheduleIdSchema, scheduleSchema } from '../src/registry/schema.ts';

/**
 * A schedule as PUT takes it: the manifest's schedule shape (which the schedule service validates with) and the model
 * it scores; the id comes from the path.
 */
export const scheduleRequest = scheduleSchema.partial({ id: true }).extend({
  model: z.string().meta({ description: 'a served feature model' }),
});

const stored = scheduleSchema.extend({
  model: z.string(),
  source: z.enum(['manifest', 'api']),
  updatedAt: z.string(),
  updatedBy: z.string(),
});

export const scheduleDocs: RouteDoc[] = [
  {
    method: 'get',
    path: '/v1/schedules',
    summary: 'The cron schedules of batch scoring',
    tag: 'batch',
    auth: ['admin'],
    responses: { 200: { description: 'schedules', schema: z.object({ schedules: z.array(stored) }) } },
  },
  {
    method: 'put',
    path: '/v1/schedules/{id}',
    summary: 'Create or change a schedule (idempotent)',
    tag: 'batch',
    auth: ['admin'],
    body: scheduleRequest,
    responses: { 200: { description: 'changed', schema: stored }, 201: { description: 'created', schema: stored } },
    errors: ['model_not_found', 'wrong_tier', 'not_found', 'invalid_input_file'],
  },
  {
    method: 'delete',
    path: '/v1/schedules/{id}',
    summary: 'Remove a schedule',
    tag: 'batch',
    auth: ['admin'],
    responses: { 204: { description: 'removed' } },
    errors: ['not_found'],
  },
];

/** Cron schedules of batch scoring: admins list, create or change (PUT is an idempotent upsert), and remove them. */
export function scheduleRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  const admin = requireRole(deps, 'admin');

  app.get('/', admin, async (c) => c.json({ schedules: await deps.schedules.list() }));

  app.put('/:id', admin, async (c) => {
    const id = c.req.param('id');
    if (!scheduleIdSchema.safeParse(id).success)
      throw new Problem('invalid_request', 'schedule ids are 1-63 of a-z, 0-9 and -');
    const { model: name, ...definition } = asJsonObject(await readJson(c), '(a schedule)');
    const model = typeof name === 'string' ? deps.catalog.get(name) : undefined;
    if (!model) throw new Problem('model_not_found', 'model must name a served model');
    if (model.manifest.input !== 'features')
      throw new Problem('wrong_tier', 'only feature models can be scored in batch');
    if ('id' in definition && definition.id !== id)
      throw new Problem('invalid_request', 'the id in the body differs from the path');
    await deps.batches.checkInput(definition.input);
    const { schedule, created } = await deps.schedules.put(
      model.manifest.name,
      { ...definition, id },
      c.get('principal')!,
      'api',
    );
    return c.json(schedule, created ? 201 : 200);
  });

  app.delete('/:id', admin, async (c) => {
    const removed = await deps.schedules.remove(c.req.param('id'), c.get('principal')!);
    if (!removed) throw new Problem('not_found', 'no such schedule');
    return c.body(null, 204);
  });
  return app;
}
