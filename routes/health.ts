import { Hono } from 'hono';
import type { AppDeps, AppEnv } from '../src/context.ts';
import { Problem } from '../src/platform/errors.ts';
import { requireRole } from '../src/platform/http.ts';

/** How long /readyz waits for Redis to answer a PING before reporting it unreachable. */
export const REDIS_PROBE_TIMEOUT_MS = 1_000;

/** Liveness, readiness and the Prometheus exposition. Open by default (inside a cluster), else admin-only. */
export function opsRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  if (!deps.options.openOpsEndpoints) app.use('*', requireRole(deps, 'admin'));

  app.get('/healthz', (c) => c.json({ status: 'ok' }));

  app.get('/readyz', async (c) => {
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
    return c.json({ status: 'ready', checks });
  });

  app.get('/metrics', async (c) => {
    const body = await deps.metrics.registry.metrics();
    return c.body(body, 200, { 'content-type': deps.metrics.registry.contentType });
  });
  return app;
}
