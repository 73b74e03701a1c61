import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { methodNotAllowed } from 'hono/method-not-allowed';
import { routePath } from 'hono/route';
import { adminRoutes } from '../routes/admin.ts';
import { batchReviewRoutes } from '../routes/batch-reviews.ts';
import { batchRoutes } from '../routes/batches.ts';
import { cdsHooksRoutes } from '../routes/cds-hooks.ts';
import { deskRoutes } from '../routes/desk.tsx';
import { fhirRoutes } from '../routes/fhir.ts';
import { opsRoutes } from '../routes/health.ts';
import { hl7Routes } from '../routes/hl7.ts';
import { jobRoutes } from '../routes/jobs.ts';
import { modelRoutes } from '../routes/models.ts';
import { monitoringRoutes } from '../routes/monitoring.ts';
import { oipRoutes } from '../routes/oip.ts';
import { openApiRoutes } from '../routes/openapi.ts';
import { outcomeRoutes } from '../routes/outcomes.ts';
import { predictRoutes } from '../routes/predict.ts';
import { releaseRoutes } from '../routes/releases.ts';
import { reviewRoutes } from '../routes/reviews.ts';
import { scheduleRoutes } from '../routes/schedules.ts';
import { suspensionRoutes } from '../routes/suspensions.ts';
import { thresholdChangeRoutes } from '../routes/threshold-changes.ts';
import type { AppDeps, AppEnv } from './context.ts';
import { deadlines } from './platform/deadlines.ts';
import { Problem } from './platform/errors.ts';
import { problemResponse, requestIdOf } from './platform/http.ts';
import { accessLogWriter } from './platform/logger.ts';
import { isRedisUnavailable } from './platform/redis.ts';
import { secureResponseHeaders } from './platform/secure-headers.ts';

/** Builds the HTTP app from its dependencies. Pure: no I/O happens until a request arrives. */
export function createApp(deps: AppDeps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();
  const { metrics, logger } = deps;
  const deadlineOverrun = metrics.deadlineOverrun;
  // The access log's fields are identifiers built here (route pattern, ids, labels), never a body or a header, so
  // its lines skip the logger's redaction and generic serialisation: a line built by hand (see accessLogWriter)
  const accessLog = accessLogWriter(logger);
  const secureHeaders = secureResponseHeaders();

  app.use('*', async (c, next) => {
    const started = performance.now();
    const requestId = requestIdOf(c.req.header('x-request-id'));
    c.set('requestId', requestId);
    c.set('arrivedAt', started);
    c.set('maxBodyBytes', deps.options.maxBodyBytes);
    await next();
    // answers come in bursts (a scored batch resolves many requests in one turn): what fell due meanwhile leaves now
    deadlines.sweep();
    // hot routes (predict) and problem responses carry these already; setting headers on Hono's prepared response would
    // turn every response into a full WHATWG Response, which costs the hot path dearly
    if (!c.get('requestIdSent')) {
      c.header('x-request-id', requestId);
      await secureHeaders(c);
    }
    const seconds = (performance.now() - started) / 1000;
    const model = c.get('model');
    const route = routePath(c, -1) || 'unmatched';
    const status = c.res.status;
    const labels = {
      route,
      method: c.req.method,
      status: String(status),
      model: model?.manifest.name ?? '',
      version: model?.version ?? '',
      tier: model?.tier ?? '',
    };
    metrics.httpRequestDuration.labels(labels).observe(seconds);
    const deadlineMs = status === 504 ? c.get('deadlineMs') : undefined;
    if (deadlineMs !== undefined) {
      deadlineOverrun.observe({ model: labels.model }, Math.max(0, seconds * 1000 - deadlineMs) / 1000);
    }
    // with the access log off, a 5xx is still logged, except the answers of a gateway under load: a 503 (refused:
    // shed, suspended, not ready, Redis away) and a 504 (the deadline) are counted in their own metrics, and under
    // overload a line for each would cost the event loop another write per refusal just when it has none to spare
    if (deps.options.accessLog || (status >= 500 && status !== 503 && status !== 504)) {
      // route pattern, never the raw path or body: no patient data in logs
      accessLog(
        status >= 500 ? 'warn' : 'info',
        requestId,
        c.get('principal')?.id,
        labels,
        Math.round(seconds * 1e6) / 1000,
      );
    }
  });

  app.route('/', opsRoutes(deps));
  app.route('/v1/models', modelRoutes(deps));
  app.route('/v1/models', predictRoutes(deps));
  app.route('/v1', jobRoutes(deps));
  app.route('/v1/reviews', reviewRoutes(deps));
  app.route('/v1/batch-reviews', batchReviewRoutes(deps));
  app.route('/v1', adminRoutes(deps));
  app.route('/v1', batchRoutes(deps));
  app.route('/v1/schedules', scheduleRoutes(deps));
  app.route('/v1', hl7Routes(deps, deps.options.hl7Models ?? []));
  app.route('/v1', releaseRoutes(deps));
  app.route('/v1', suspensionRoutes(deps));
  app.route('/v1', monitoringRoutes(deps));
  app.route('/v1', thresholdChangeRoutes(deps));
  app.route('/v1', outcomeRoutes(deps));
  app.route('/desk', deskRoutes(deps, deps.options.sessionSecret));
  app.route('/v2', oipRoutes(deps));
  app.route('/', openApiRoutes(deps));
  app.route('/fhir', fhirRoutes(deps));
  if (deps.cds) app.route('/cds-services', cdsHooksRoutes(deps, deps.cds));

  // a path that exists under another method is a 405 with Allow: Hono's middleware, run only for responses that are
  // 404s anyway (as a middleware on every route it cost each bedside request an async layer)
  const allowedMethods = methodNotAllowed({
    app,
    onMethodNotAllowed: (c, methods) => {
      const res = problemResponse(c, new Problem('method_not_allowed', `allowed: ${methods.join(', ')}`));
      res.headers.set('allow', methods.join(', '));
      return res;
    },
  });
  app.notFound(async (c) => {
    c.res = problemResponse(c, new Problem('not_found', 'no such resource'));
    await allowedMethods(c, async () => {});
    return c.res;
  });
  app.onError((err, c) => {
    if (err instanceof Problem) return problemResponse(c, err);
    if (err instanceof HTTPException && err.status < 500) {
      return problemResponse(c, new Problem('invalid_request', err.message));
    }
    if (isRedisUnavailable(err)) {
      // nothing was accepted: the caller retries, and the gateway recovers by itself when Redis is back (debug: an
      // outage would otherwise log a line per request; the connection's own errors are logged once a second)
      logger.debug({ requestId: c.get('requestId'), err: { message: (err as Error).message } }, 'redis unavailable');
      return problemResponse(
        c,
        new Problem('dependency_unavailable', 'Redis is unavailable: nothing was recorded; retry shortly', {
          headers: { 'retry-after': '1' },
        }),
      );
    }
    logger.error(
      { requestId: c.get('requestId'), err: { type: (err as Error).name, message: (err as Error).message } },
      'unhandled error',
    );
    return problemResponse(c, new Problem('internal', 'an internal error occurred; quote the request id'));
  });
  return app;
}
