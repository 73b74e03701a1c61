import { Hono } from 'hono';
import { z } from 'zod';
import type { CdsHooksService } from '../src/cds-hooks/service.ts';
import type { AppContext, AppDeps, AppEnv } from '../src/context.ts';
import { Problem } from '../src/platform/errors.ts';
import { readJson } from '../src/platform/http.ts';
import type { RouteDoc } from '../src/platform/openapi.ts';

export const cdsHooksDocs: RouteDoc[] = [
  {
    method: 'get',
    path: '/cds-services',
    summary: 'CDS Hooks discovery: a service per hook of each model that declares hooks',
    tag: 'cds-hooks',
    auth: 'public',
    responses: { 200: { description: '{"services": [...]}' } },
  },
  {
    method: 'post',
    path: '/cds-services/{id}',
    summary: 'A CDS Hooks call (the EHR’s JWT): one card, or the no-score card',
    tag: 'cds-hooks',
    auth: 'public',
    body: z.object({}).loose(),
    responses: { 200: { description: '{"cards": [...]}' } },
    errors: ['invalid_request', 'not_found', 'identity_provider_unavailable'],
  },
  {
    method: 'post',
    path: '/cds-services/{id}/feedback',
    summary: 'CDS Hooks feedback (the EHR’s JWT): accepted or overridden, counted per model version',
    tag: 'cds-hooks',
    auth: 'public',
    body: z.object({}).loose(),
    responses: { 200: { description: '{"recorded", "repeated"}' } },
    errors: ['invalid_request', 'not_found', 'identity_provider_unavailable'],
  },
];

/**
 * CDS Hooks 2.0: `GET /cds-services` (discovery, open as the spec has it), `POST /cds-services/{id}` (cards) and
 * `POST /cds-services/{id}/feedback`, both behind the EHR's JWT. Errors are problem+json.
 */
export function cdsHooksRoutes(deps: AppDeps, cds: CdsHooksService) {
  const app = new Hono<AppEnv>();

  app.get('/', (c) =>
    c.json({
      services: cds.services().map(({ model: _, ...s }) => s),
    }),
  );

  /** The EHR's JWT, with failed attempts counted against the source address like any credential. */
  async function client(c: AppContext, id: string) {
    const limiter = deps.limiter;
    const address = limiter?.addressOf(c);
    if (limiter && address) limiter.assertNotBlocked(address);
    const { model } = cds.resolve(id);
    c.set('model', model);
    try {
      return await cds.authenticate(c.req.header('authorization'), id, c.req.url);
    } catch (err) {
      if (limiter && address && err instanceof Problem && err.code === 'unauthenticated')
        throw (await limiter.authFailed(address)) ?? err;
      throw err;
    }
  }

  app.post('/:id', async (c) => {
    const id = c.req.param('id');
    const who = await client(c, id);
    // the request id (X-Request-Id of the answer) names the scored prediction for outcomes, as on every door
    return c.json(await cds.call(id, await readJson(c), who, c.get('requestId')));
  });

  app.post('/:id/feedback', async (c) => {
    const id = c.req.param('id');
    const who = await client(c, id);
    return c.json(await cds.recordFeedback(id, await readJson(c), who));
  });
  return app;
}
