import { Hono } from 'hono';
import { z } from 'zod';
import type { AppDeps, AppEnv } from '../src/context.ts';
import { Problem } from '../src/platform/errors.ts';
import { requireRole } from '../src/platform/http.ts';
import type { RouteDoc } from '../src/platform/openapi.ts';

export const opsDocs: RouteDoc[] = [
  {
    method: 'get',
    path: '/healthz',
    summary: 'Liveness',
    tag: 'ops',
    auth: 'ops',
    responses: { 200: { description: 'alive', schema: z.object({ status: z.literal('ok') }) } },
  },
  {
    method: 'get',
    path: '/readyz',
    summary: 'Readiness: Redis reachable, sync models warm',
    tag: 'ops',
    auth: 'ops',
    responses: {
      200: {
        description: 'ready',
        schema: z.object({ status: z.literal('ready'), checks: z.record(z.string(), z.string()) }),
      },
    },
    errors: ['not_ready'],
  },
  {
    method: 'get',
    path: '/metrics',
    summary: 'Prometheus exposition',
    tag: 'ops',
    auth: 'ops',
    responses: { 200: { description: 'metrics', type: 'text/plain; version=0.0.4' } },
  },
];

/** How long /readyz waits for Redis to answer a PING before reporting it unreachable. */
export const REDIS_PROBE_TIMEOUT_MS = 1_000;

/** Redis answers a PING in time and every sync model is warm; else 503 `not_ready` naming what is not. */
export async function assertReady(deps: AppDeps): Promise<Record<string, string>> {
  // bounded: a Redis that stops answering on an open connection would otherwise hang the probe forever
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(resolve, REDIS_PROBE_TIMEOUT_MS, false);
  });
  const redis = await Promise.race([deps.redisReady().catch(() => false), timeout]);
  clearTimeout(timer);
  const models = deps.sync.ready();
  const checks = { redis: redis ? 'ok' : 'unreachable', models: models ? 'warm' : 'loading' };
  if (!redis || !models) throw new Problem('not_ready', 'a dependency is not ready', { extensions: { checks } });
  return checks;
}

/** Liveness, readiness and the Prometheus exposition. Open by default (inside a cluster), else admin-only. */
export function opsRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  if (!deps.options.openOpsEndpoints) app.use('*', requireRole(deps, 'admin'));

  app.get('/healthz', (c) => c.json({ status: 'ok' }));

  app.get('/readyz', async (c) => c.json({ status: 'ready', checks: await assertReady(deps) }));

  app.get('/metrics', async (c) => {
    const body = await deps.metrics.registry.metrics();
    return c.body(body, 200, { 'content-type': deps.metrics.registry.contentType });
  });
  return app;
}
