import { Hono } from 'hono';
import { z } from 'zod';
import type { RunHold } from '../src/batch/review-store.ts';
import type { AppDeps, AppEnv } from '../src/context.ts';
import { assertModelAllowed } from '../src/platform/auth.ts';
import { Problem } from '../src/platform/errors.ts';
import { readJson, requireRole } from '../src/platform/http.ts';
import { bodyObject, parseBody, type RouteDoc } from '../src/platform/openapi.ts';
import { MODEL_NAME } from '../src/registry/schema.ts';
import { decisionReason, intParam } from './reviews.ts';

export const batchDecisionRequest = bodyObject(
  {
    decision: z.enum(['approve', 'reject'], { error: 'decision must be "approve" or "reject"' }),
    reason: decisionReason,
  },
  '{"decision", "reason"}',
);

function holdView(h: RunHold, now: number) {
  return {
    runId: h.runId,
    model: h.model,
    version: h.version,
    hold: h.hold,
    state: h.state === 'held' ? 'awaiting_review' : h.state,
    requestedBy: h.requestedBy,
    heldAt: new Date(h.heldAt).toISOString(),
    ageSeconds: Math.round((now - h.heldAt) / 1000),
    rows: { scored: h.scored, aboveThreshold: h.above, held: h.heldRows },
    ...(h.decision ? { decision: { ...h.decision, at: new Date(h.decision.at).toISOString() } } : {}),
    links: { self: `/v1/batch-reviews/${h.runId}`, decision: `/v1/batch-reviews/${h.runId}/decision` },
  };
}

const holdView_ = z.looseObject({
  runId: z.string(),
  model: z.string(),
  version: z.string(),
  hold: z.enum(['run', 'above-threshold']),
  state: z.enum(['awaiting_review', 'approved', 'rejected']),
  heldAt: z.string(),
  rows: z.object({ scored: z.int(), aboveThreshold: z.int(), held: z.int() }),
  links: z.object({ self: z.string(), decision: z.string() }),
});

export const batchReviewDocs: RouteDoc[] = [
  {
    method: 'get',
    path: '/v1/batch-reviews',
    summary: 'Batch runs whose output waits for clinician review, oldest first',
    tag: 'reviews',
    auth: ['reviewer'],
    query: {
      model: { schema: z.string(), description: 'only this model' },
      limit: { schema: z.int().min(1).max(500).default(50), description: 'page size' },
      offset: { schema: z.int().min(0).max(1_000_000).default(0), description: 'items to skip' },
    },
    responses: {
      200: {
        description: 'held runs',
        schema: z.object({ items: z.array(holdView_), total: z.int() }),
      },
    },
    errors: ['invalid_request', 'model_not_found'],
  },
  {
    method: 'get',
    path: '/v1/batch-reviews/{runId}',
    summary: "A held run's summary: rows scored, above the threshold and held, and a sample of the held rows",
    tag: 'reviews',
    auth: ['reviewer'],
    responses: { 200: { description: 'the held run', schema: holdView_ } },
    errors: ['not_found'],
  },
  {
    method: 'post',
    path: '/v1/batch-reviews/{runId}/decision',
    summary: "Approve (release) or reject a held run's output, with a reason (applied once; not by its requester)",
    tag: 'reviews',
    auth: ['reviewer'],
    body: batchDecisionRequest,
    responses: { 200: { description: 'the decided run', schema: holdView_ } },
    errors: ['not_found', 'already_decided', 'forbidden'],
  },
];

/** Clinician review of batch output: what waits, one run's summary with a sample, the decision. Role `reviewer`. */
export function batchReviewRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  const reviewer = requireRole(deps, 'reviewer');
  const service = deps.batchReviews;

  app.get('/', reviewer, async (c) => {
    const model = c.req.query('model');
    if (model !== undefined && (!MODEL_NAME.test(model) || !deps.catalog.get(model))) {
      throw new Problem('model_not_found', 'no model by that name');
    }
    if (model !== undefined) assertModelAllowed(c.get('principal')!, model);
    const limit = intParam(c.req.query('limit'), 'limit', 50, 1, 500);
    const offset = intParam(c.req.query('offset'), 'offset', 0, 0, 1_000_000);
    const { items, total } = await service.pending(c.get('principal')!, model, offset, limit);
    const now = service.now();
    return c.json({ items: items.map((h) => holdView(h, now)), total });
  });

  app.get('/:runId', reviewer, async (c) => {
    const { hold, run } = await service.item(c.get('principal')!, c.req.param('runId'));
    // a rejected run's rows are not shown again; a decided one needs no sample
    const sample = hold.state === 'held' ? await service.sample(run) : [];
    return c.json({ ...holdView(hold, service.now()), sample });
  });

  app.post('/:runId/decision', reviewer, async (c) => {
    const body = parseBody(batchDecisionRequest, await readJson(c));
    const hold = await service.decide(c.get('principal')!, c.req.param('runId'), body);
    return c.json(holdView(hold, service.now()));
  });
  return app;
}
