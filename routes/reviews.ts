import { Hono } from 'hono';
import { z } from 'zod';
import type { AppDeps, AppEnv } from '../src/context.ts';
import type { JobRecord } from '../src/jobs/store.ts';
import { assertModelAllowed } from '../src/platform/auth.ts';
import { Problem } from '../src/platform/errors.ts';
import { readJson, requireRole } from '../src/platform/http.ts';
import { bodyObject, parseBody, type RouteDoc } from '../src/platform/openapi.ts';
import { MODEL_NAME } from '../src/registry/schema.ts';

/** A paging parameter of a review queue (this one and batch output's). */
export function intParam(raw: string | undefined, name: string, fallback: number, min: number, max: number): number {
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

const REASON_MESSAGE = 'reason is required (1-2000 characters)';

/** A decision's reason, as every review queue takes it. */
export const decisionReason = z
  .string({ error: REASON_MESSAGE })
  .max(2000, REASON_MESSAGE)
  .refine((r) => r.trim().length > 0, REASON_MESSAGE);

export const decisionRequest = bodyObject(
  {
    decision: z.enum(['approve', 'reject', 'amend'], { error: 'decision must be "approve", "reject" or "amend"' }),
    reason: decisionReason,
    output: z.unknown().optional().meta({
      type: 'object',
      description: 'only with decision "amend": the corrected output, in the shape of the model\'s output',
    }),
  },
  '{"decision", "reason", "output"?}',
);

const reviewSummary_ = z.looseObject({
  id: z.string(),
  model: z.string(),
  version: z.string(),
  state: z.string(),
  heldAt: z.string(),
  ageSeconds: z.number(),
  holdReason: z.unknown(),
  escalated: z.boolean(),
  links: z.object({ self: z.string(), decision: z.string() }),
});

export const reviewDocs: RouteDoc[] = [
  {
    method: 'get',
    path: '/v1/reviews',
    summary: 'The review queue, oldest first',
    tag: 'reviews',
    auth: ['reviewer'],
    query: {
      model: { schema: z.string(), description: 'only this model' },
      limit: { schema: z.int().min(1).max(500).default(50), description: 'page size' },
      offset: { schema: z.int().min(0).max(1_000_000).default(0), description: 'items to skip' },
    },
    responses: {
      200: {
        description: 'held results waiting for a decision',
        schema: z.object({
          items: z.array(reviewSummary_),
          total: z.int(),
          links: z.object({ next: z.string() }).optional(),
        }),
      },
    },
    errors: ['invalid_request', 'model_not_found'],
  },
  {
    method: 'get',
    path: '/v1/reviews/{id}',
    summary: 'A held result with its input and output',
    tag: 'reviews',
    auth: ['reviewer'],
    responses: { 200: { description: 'the review item', schema: reviewSummary_ } },
    errors: ['not_found'],
  },
  {
    method: 'post',
    path: '/v1/reviews/{id}/decision',
    summary: 'Approve, reject or amend a held result, with a reason (applied once)',
    tag: 'reviews',
    auth: ['reviewer'],
    body: decisionRequest,
    responses: { 200: { description: 'the decided item', schema: reviewSummary_ } },
    errors: ['not_found', 'already_decided', 'invalid_state'],
  },
];

/** The clinician review queue: list what waits (oldest first), open one, decide. Role `reviewer`. */
export function reviewRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  const reviewer = requireRole(deps, 'reviewer');

  app.get('/', reviewer, async (c) => {
    const model = c.req.query('model');
    if (model !== undefined && (!MODEL_NAME.test(model) || !deps.catalog.get(model))) {
      throw new Problem('model_not_found', 'no model by that name');
    }
    if (model !== undefined) assertModelAllowed(c.get('principal')!, model);
    const limit = intParam(c.req.query('limit'), 'limit', 50, 1, 500);
    const offset = intParam(c.req.query('offset'), 'offset', 0, 0, 1_000_000);
    const { items, total } = await deps.reviews.pending(c.get('principal')!, model, offset, limit);
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
    const r = await deps.reviews.reviewItem(c.get('principal')!, c.req.param('id'));
    return c.json({
      ...reviewSummary(r, deps.reviews.now()),
      input: r.input,
      output: r.output,
      ...(r.decision ? { decision: { ...r.decision, at: new Date(r.decision.at).toISOString() } } : {}),
      ...(r.amendedOutput !== undefined ? { amendedOutput: r.amendedOutput } : {}),
    });
  });

  app.post('/:id/decision', reviewer, async (c) => {
    const body = parseBody(decisionRequest, await readJson(c));
    const id = c.req.param('id');
    const item = await deps.reviews.reviewItem(c.get('principal')!, id);
    const record = await deps.reviews.decide(c.get('principal')!, id, body, deps.catalog.get(item.model));
    return c.json({
      ...reviewSummary(record, deps.reviews.now()),
      decision: { ...record.decision, at: new Date(record.decision?.at ?? 0).toISOString() },
    });
  });
  return app;
}
