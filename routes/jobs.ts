import { Hono } from 'hono';
import { z } from 'zod';
import { releasedResult } from '../src/callbacks/payload.ts';
import { type AppContext, type AppDeps, type AppEnv, resolveModel } from '../src/context.ts';
import type { JobRecord } from '../src/jobs/store.ts';
import { Problem } from '../src/platform/errors.ts';
import { readJson, requireRole } from '../src/platform/http.ts';
import { bodyObject, parseBody, present, type RouteDoc } from '../src/platform/openapi.ts';
import { secureHeaderRecord } from '../src/platform/secure-headers.ts';

const IDEMPOTENCY_MESSAGE = 'idempotencyKey must be 1-128 of letters, digits, . _ : -';

export const jobRequest = bodyObject(
  {
    input: present('"input" is required').meta({
      description:
        'feature models: {"instances": [...]}; document models: {"text": "..."}, {"document": <FHIR DocumentReference>} or the DocumentReference itself',
      type: 'object',
    }),
    // checked by the callback policy (invalid_callback_url), which resolves the host
    callbackUrl: z
      .unknown()
      .optional()
      .meta({
        type: ['string', 'null'],
        format: 'uri',
        description: "https, to a host in the key's callback allowlist",
      }),
    idempotencyKey: z
      .string({ error: IDEMPOTENCY_MESSAGE })
      .regex(/^[A-Za-z0-9._:-]{1,128}$/, IDEMPOTENCY_MESSAGE)
      .optional(),
    reference: z
      .string({ error: 'reference must be 1-256 printable characters' })
      .regex(/^[\x20-\x7e]{1,256}$/, 'reference must be 1-256 printable characters')
      .optional()
      .meta({ description: "the caller's own reference (an order number), returned in the callback's correlation" }),
  },
  '{"input": …, "callbackUrl"?, "idempotencyKey"?, "reference"?}',
);

const jobView_ = z.object({
  id: z.string(),
  model: z.string(),
  version: z.string(),
  owner: z.unknown(),
  state: z.enum(['queued', 'running', 'awaiting_review', 'released', 'rejected', 'failed', 'cancelled']),
  createdAt: z.string(),
  updatedAt: z.string(),
  escalated: z.boolean().optional(),
  result: z.unknown().optional(),
  error: z.string().optional(),
  links: z.object({ self: z.string() }),
});

export const jobAccepted = {
  description: 'accepted: Location names the job; `created` is false for a repeated idempotency key',
  schema: jobView_.extend({ created: z.boolean() }),
};

export const jobDocs: RouteDoc[] = [
  {
    method: 'post',
    path: '/v1/models/{model}/jobs',
    summary: 'Submit an async job (held for review when the model says so)',
    tag: 'async',
    auth: ['client'],
    body: jobRequest,
    responses: { 202: jobAccepted },
    errors: [
      'invalid_input',
      'invalid_callback_url',
      'batch_too_large',
      'model_not_found',
      'wrong_tier',
      'idempotency_conflict',
    ],
  },
  {
    method: 'get',
    path: '/v1/jobs/{id}',
    summary: 'A job: its state, and its result once released',
    tag: 'async',
    auth: ['client'],
    responses: { 200: { description: 'the job', schema: jobView_ } },
    errors: ['not_found'],
  },
  {
    method: 'delete',
    path: '/v1/jobs/{id}',
    summary: 'Cancel a job',
    tag: 'async',
    auth: ['client'],
    responses: { 200: { description: 'the cancelled job', schema: jobView_ } },
    errors: ['not_found', 'invalid_state'],
  },
];

/** The job as its submitter sees it: state and timestamps; the result only once released. */
export function jobView(record: JobRecord, owner: unknown) {
  return {
    id: record.id,
    model: record.model,
    version: record.version,
    owner,
    state: record.state,
    createdAt: new Date(record.createdAt).toISOString(),
    updatedAt: new Date(record.updatedAt).toISOString(),
    ...(record.state === 'awaiting_review' && record.escalated ? { escalated: true } : {}),
    ...(record.state === 'released' ? { result: releasedResult(record) } : {}),
    ...(record.state === 'failed' ? { error: record.error } : {}),
    links: { self: `/v1/jobs/${record.id}` },
  };
}

/** Accepts a job: shared by `POST …/jobs` and `POST …/predict` with `Prefer: respond-async`. */
export async function acceptJob(c: AppContext, deps: AppDeps, body: unknown) {
  const model = resolveModel(c, deps);
  if (model.tier === 'batch') {
    throw new Problem(
      'wrong_tier',
      `"${model.manifest.name}" is a batch model: use /v1/models/${model.manifest.name}/batches`,
    );
  }
  const fields = parseBody(jobRequest, body);
  const headerKey = c.req.header('idempotency-key');
  if (headerKey !== undefined && fields.idempotencyKey !== undefined && headerKey !== fields.idempotencyKey) {
    throw new Problem('invalid_request', 'Idempotency-Key header and idempotencyKey differ');
  }
  const principal = c.get('principal');
  if (!principal) throw new Problem('unauthenticated');
  const { id, created, createdAt } = await deps.jobs.submit(
    principal,
    model,
    { ...fields, ...(headerKey !== undefined ? { idempotencyKey: headerKey } : {}) },
    deps.options.publicUrl ?? new URL(c.req.url).origin,
  );
  // a new job's record is what was just written: no second read on the submit path
  const record: JobRecord = created
    ? {
        id,
        model: model.manifest.name,
        version: model.version,
        client: principal.id,
        state: 'queued',
        input: undefined,
        createdAt,
        updatedAt: createdAt,
        escalated: false,
        attempts: 0,
      }
    : await deps.jobs.ownJob(principal, id);
  // a plain Response with a header record stays on @hono/node-server's fast path, as predict's 200 does: c.header and
  // c.json would build a WHATWG Response, and the app's middleware would copy it to add its headers (a large share of
  // the gateway's CPU per submission in the async bench's profile)
  c.set('requestIdSent', true);
  const headers = secureHeaderRecord('application/json', c.get('requestId') ?? '');
  const limits = c.get('rateLimitHeaders');
  for (const name in limits) headers[name] = limits[name] as string;
  headers.location = `/v1/jobs/${id}`;
  headers['retry-after'] = '1';
  return new Response(JSON.stringify({ ...jobView(record, model.manifest.owner), created }), { status: 202, headers });
}

export function jobRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  const client = requireRole(deps, 'client');

  app.post('/models/:model/jobs', client, async (c) => acceptJob(c, deps, await readJson(c)));

  app.get('/jobs/:id', client, async (c) => {
    const record = await deps.jobs.ownJob(c.get('principal')!, c.req.param('id'));
    return c.json(jobView(record, deps.catalog.get(record.model)?.manifest.owner));
  });

  app.delete('/jobs/:id', client, async (c) => {
    const record = await deps.jobs.cancel(c.get('principal')!, c.req.param('id'));
    return c.json(jobView(record, deps.catalog.get(record.model)?.manifest.owner));
  });
  return app;
}
