import type { Context } from 'hono';
import type { AppDeps, AppEnv } from '../context.ts';
import { MODEL_NAME } from '../registry/schema.ts';
import type { ServedModel } from '../sync/service.ts';
import { assertModelAllowed } from './auth.ts';
import { Problem } from './errors.ts';

/** The `:model` path parameter → a served model the caller may use: 404 unknown, 403 not allowed. */
export function resolveModel(c: Context<AppEnv>, deps: AppDeps): ServedModel {
  const name = c.req.param('model') ?? '';
  const model = MODEL_NAME.test(name) ? deps.models.get(name) : undefined;
  if (!model) throw new Problem('model_not_found', 'no model by that name; GET /v1/models lists them');
  const principal = c.get('principal');
  if (principal) assertModelAllowed(principal, name);
  c.set('model', model);
  return model;
}
