import { Hono } from 'hono';
import { z } from 'zod';
import type { AppDeps, AppEnv } from '../src/context.ts';
import { Problem } from '../src/platform/errors.ts';
import { requireRole } from '../src/platform/http.ts';
import type { RouteDoc } from '../src/platform/openapi.ts';

export const adminDocs: RouteDoc[] = [
  {
    method: 'get',
    path: '/v1/audit',
    summary: 'The audit trail: who, when, what, why',
    tag: 'admin',
    auth: ['admin'],
    query: {
      after: { schema: z.string().regex(/^\d{1,20}-\d{1,20}$/), description: 'the id of the last entry seen' },
      limit: { schema: z.int().min(1).max(1000).default(100), description: 'page size' },
    },
    responses: {
      200: {
        description: 'entries, oldest first',
        schema: z.object({
          entries: z.array(z.looseObject({ id: z.string() })),
          links: z.object({ next: z.string() }).optional(),
        }),
      },
    },
    errors: ['invalid_request'],
  },
  {
    method: 'get',
    path: '/v1/callbacks/dead-letters',
    summary: 'Callbacks that could not be delivered',
    tag: 'admin',
    auth: ['admin'],
    responses: { 200: { description: 'dead letters', schema: z.object({ items: z.array(z.looseObject({})) }) } },
  },
  {
    method: 'post',
    path: '/v1/callbacks/dead-letters/{eventId}/replay',
    summary: 'Deliver a dead letter again',
    tag: 'admin',
    auth: ['admin'],
    responses: { 202: { description: 'queued again', schema: z.object({ replayed: z.looseObject({}) }) } },
    errors: ['not_found'],
  },
];

const MAX_U64 = 2n ** 64n - 1n;

/** A Redis stream id: two unsigned 64-bit numbers (Redis refuses anything larger, and that refusal was a 500). */
function isStreamId(id: string): boolean {
  const m = /^(\d{1,20})-(\d{1,20})$/.exec(id);
  return m !== null && BigInt(m[1] as string) <= MAX_U64 && BigInt(m[2] as string) <= MAX_U64;
}

/** Admin only: the audit trail (who, when, what, why) and the callback dead-letter list with replay. */
export function adminRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  const admin = requireRole(deps, 'admin');

  app.get('/audit', admin, async (c) => {
    const after = c.req.query('after');
    if (after !== undefined && !isStreamId(after))
      throw new Problem('invalid_request', 'after must be an audit entry id');
    const limitRaw = c.req.query('limit') ?? '100';
    if (!/^\d{1,4}$/.test(limitRaw) || Number(limitRaw) < 1 || Number(limitRaw) > 1000) {
      throw new Problem('invalid_request', 'limit must be 1-1000');
    }
    // nothing can follow the largest id (and Redis refuses an exclusive range that starts past it)
    const last64 = `${MAX_U64}-${MAX_U64}`;
    const entries = after === last64 ? [] : await deps.audit.read(after, Number(limitRaw));
    const last = entries.at(-1);
    return c.json({ entries, ...(last ? { links: { next: `/v1/audit?after=${last.id}&limit=${limitRaw}` } } : {}) });
  });

  app.get('/callbacks/dead-letters', admin, async (c) => c.json({ items: await deps.deadLetters.list() }));

  app.post('/callbacks/dead-letters/:eventId/replay', admin, async (c) => {
    const eventId = c.req.param('eventId');
    if (!/^evt-[0-9a-f-]{36}-(released|rejected|failed)$/.test(eventId))
      throw new Problem('not_found', 'no such dead letter');
    const principal = c.get('principal')!;
    const letter = await deps.deadLetters.replay(eventId, principal);
    return c.json({ replayed: letter }, 202);
  });
  return app;
}
