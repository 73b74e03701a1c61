import { Hono } from 'hono';
import type { AppDeps, AppEnv } from '../src/context.ts';
import type { JobRecord } from '../src/jobs/store.ts';
import { Problem } from '../src/platform/errors.ts';
import { readJson, requireRole } from '../src/platform/http.ts';
import { asJsonObject } from '../src/platform/json-body.ts';
import { MODEL_NAME } from '../src/registry/schema.ts';

function intParam(raw: string | undefined, name: string, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  if (!/^\d{1,6}$/.test(raw) || Number(raw) < min || Number(raw) > max) {
    throw new Problem('invalid_request', `${name} must be a whole number from ${min} to ${max}`);
  }
  return Number(raw);
}

function reviewSummary(r: JobRecord, now: number) {
  return {
    id: r.id,
    model: r.model,
    version: r.version,
    state: r.state,
    heldAt: new Date(r.heldAt ?? r.createdAt).toISOString(),
    ageSeconds: Math.round((now - (r.heldAt ?? r.createdAt)) / 1000),
    holdReason: r.holdReason,
    escalated: r.escalated,
    links: { self: `/v1/reviews/${r.id}`, decision: `/v1/reviews/${r.id}/decision` },
  };
}

/** The clinician review queue: list what waits (oldest first), open one, decide. Role `reviewer`. */
export function reviewRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  const reviewer = requireRole(deps, 'reviewer');

  app.get('/', reviewer, async (c) => {
    const model = c.req.query('model');
    if (model !== undefined && (!MODEL_NAME.test(model) || !deps.catalog.get(model))) {
      throw new Problem('model_not_found', 'no model by that name');
    }
    const limit = intParam(c.req.query('limit'), 'limit', 50, 1, 500);
    const offset = intParam(c.req.query('offset'), 'offset', 0, 0, 1_000_000);
    const { items, total } = await deps.reviews.pending(model, offset, limit);
    const now = deps.reviews.now();
    const next = offset + items.length < total ? offset + items.length : undefined;
    return c.json({
      items: items.map((r) => reviewSummary(r, now)),
      total,
      ...(next !== undefined
        ? {
            links: {
              next: `/v1/reviews?${new URLSearchParams({ ...(model ? { model } : {}), limit: String(limit), offset: String(next) })}`,
            },
          }
        : {}),
    });
  });

  app.get('/:id', reviewer, async (c) => {
    const r = await deps.reviews.reviewItem(c.req.param('id'));
    return c.json({
      ...reviewSummary(r, deps.reviews.now()),
      input: r.input,
      output: r.output,
      ...(r.decision ? { decision: { ...r.decision, at: new Date(r.decision.at).toISOString() } } : {}),
      ...(r.amendedOutput !== undefined ? { amendedOutput: r.amendedOutput } : {}),
    });
  });

  app.post('/:id/decision', reviewer, async (c) => {
    const body = asJsonObject(await readJson(c), '{"decision", "reason", "output"?}');
    const id = c.req.param('id');
    const item = await deps.reviews.reviewItem(id);
    const record = await deps.reviews.decide(c.get('principal')!, id, body, deps.catalog.get(item.model));
    return c.json({
      ...reviewSummary(record, deps.reviews.now()),
      decision: { ...record.decision, at: new Date(record.decision?.at ?? 0).toISOString() },
    });
  });
  return app;
}
