import { Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { stream } from 'hono/streaming';
import { z } from 'zod';
import { publicationView } from '../src/batch/bucket-outputs.ts';
import { displayInputPath } from '../src/batch/data-areas.ts';
import { bulkManifest, expiresAt, reviewView } from '../src/batch/manifest.ts';
import { fileRefusal, releaseOf } from '../src/batch/review.ts';
import { type BatchRun, HELD_FILE, outputKey, shadowFileName, shadowOutputKey } from '../src/batch/runs.ts';
import { StorageError } from '../src/batch/storage.ts';
import { type AppDeps, type AppEnv, resolveModel } from '../src/context.ts';
import { outcomeResponse } from '../src/fhir/operation-outcome.ts';
import { isExportInput } from '../src/ingress/bulk-export.ts';
import type { Principal } from '../src/platform/auth.ts';
import { Problem } from '../src/platform/errors.ts';
import { readJson, requireRole } from '../src/platform/http.ts';
import { bodyObject, parseBody, type RouteDoc } from '../src/platform/openapi.ts';
import { batchFormats } from '../src/registry/schema.ts';

const INPUT_MESSAGE = 'input must be {"path", "format"}';
const AS_OF_MESSAGE = 'asOf must be an ISO 8601 date-time';

/** A file in the caller's data area. */
const fileInput = z.looseObject(
  {
    path: z
      .string({ error: 'input.path must be a relative path' })
      .min(1, 'input.path must be a relative path')
      .max(1024, 'input.path must be a relative path')
      .meta({ description: 'relative to your data area (shared/<grant>/… for a shared one)' }),
    format: z.enum(batchFormats, { error: `input.format must be one of ${batchFormats.join(', ')}` }),
  },
  { error: INPUT_MESSAGE },
);

export const batchRequest = bodyObject(
  {
    // a file in the caller's area, or a configured FHIR server's Bulk Data export (checked by the batch service with
    // its own schema: which servers the caller may name is configuration, not request shape)
    input: z
      .unknown()
      .superRefine((value, ctx) => {
        if (isExportInput(value)) return;
        const parsed = fileInput.safeParse(value);
        for (const issue of parsed.error?.issues ?? []) ctx.addIssue({ ...issue, path: issue.path } as never);
      })
      .meta({
        description: 'a file {"path", "format"} in your data area, or a FHIR server export {"fhirServer", "level"?, …}',
      }),
    asOf: z
      .string({ error: AS_OF_MESSAGE })
      .regex(/^\d{4}-\d{2}-\d{2}T/, AS_OF_MESSAGE)
      .refine((s) => !Number.isNaN(Date.parse(s)), AS_OF_MESSAGE)
      .optional()
      .meta({ description: 'the data cut-off (FHIR inputs: the look-back window ends here); default now' }),
    output: z
      .string({ error: 'output must be an s3:// or gs:// URL' })
      .regex(/^(s3|gs):\/\//, 'output must be an s3:// or gs:// URL')
      .max(1100, 'output must be an s3:// or gs:// URL')
      .optional()
      .meta({
        description:
          'a bucket prefix in your areas (s3://<bucket>/clients/<key id>/…): the files are published there too, and the manifest lists them as signed URLs',
      }),
  },
  '{"input": {"path", "format"}, "asOf"?, "output"?}',
);

/** A run as the API shows it (the documented part; test/batch-review-publish.test.ts checks answers against it). */
export const batchRunView = z.looseObject({
  id: z.string(),
  model: z.string(),
  version: z.string(),
  state: z.string(),
  output: z.string().optional().meta({ description: 'the bucket prefix the run publishes to, when it has one' }),
  publication: z
    .object({
      state: z.enum(['pending', 'awaiting_review', 'partial', 'published', 'withheld', 'failed']),
      at: z.iso.datetime().optional(),
      error: z.string().optional(),
    })
    .optional()
    .meta({
      description:
        "what the output bucket holds: `pending` (nothing yet: the run is still scoring), `awaiting_review` (nothing until a reviewer approves the held run; an approved run's upload is then queued), `partial` (the rows released at once; the held ones wait for review, or were rejected), `published` (everything the run released), `withheld` (a reviewer rejected the run: never), `failed` (the upload gave up after its retries: `error` says why)",
    }),
  links: z.object({ self: z.string() }),
});

export const batchDocs: RouteDoc[] = [
  {
    method: 'post',
    path: '/v1/models/{model}/batches',
    summary: 'Start a batch run over a file in your data area (Bulk Data kick-off)',
    tag: 'batch',
    auth: ['client'],
    body: batchRequest,
    responses: { 202: { description: 'accepted: Content-Location is the status URL', schema: batchRunView } },
    errors: ['model_not_found', 'wrong_tier', 'not_found', 'invalid_input_file'],
    errorShape: 'operation-outcome',
  },
  {
    method: 'get',
    path: '/v1/batches/{id}',
    summary:
      'A run: 202 with X-Progress while it runs or its output waits for review, 200 with the Bulk Data completion manifest',
    tag: 'batch',
    auth: ['client'],
    responses: {
      200: { description: 'the completion manifest (or a skipped run)', schema: z.looseObject({}) },
      202: { description: 'still running', schema: batchRunView },
    },
    errors: ['not_found', 'run_failed', 'output_rejected'],
    errorShape: 'operation-outcome',
  },
  {
    method: 'delete',
    path: '/v1/batches/{id}',
    summary: 'Cancel a run',
    tag: 'batch',
    auth: ['client'],
    responses: { 202: { description: 'cancelled', schema: batchRunView } },
    errors: ['not_found', 'invalid_state'],
    errorShape: 'operation-outcome',
  },
  {
    method: 'get',
    path: '/v1/batches/{id}/files/{file}',
    summary: "A completed run's output, error, held-rows or shadow file (held ones only once a reviewer approves)",
    tag: 'batch',
    auth: ['client'],
    responses: { 200: { description: 'NDJSON', type: 'application/fhir+ndjson' } },
    errors: ['not_found', 'awaiting_review', 'output_rejected'],
    errorShape: 'operation-outcome',
  },
];

function progress(run: BatchRun): string {
  return `${run.state}: ${run.rowsDone} rows read, ${run.scored} scored, ${run.failed} failed`;
}

function viewOf(run: BatchRun, principal?: Principal) {
  return {
    id: run.id,
    model: run.model,
    version: run.version,
    state: run.state,
    input: { ...run.input, path: displayInputPath(principal, run.input.path) },
    ...(run.scheduleId ? { scheduleId: run.scheduleId } : {}),
    ...(run.output ? { output: run.output, publication: publicationView(run) } : {}),
    // a FHIR server's export: its state and the server's X-Progress while it runs
    ...(run.source ? { source: run.source } : {}),
    createdAt: new Date(run.createdAt).toISOString(),
    rowsRead: run.rowsDone,
    scored: run.scored,
    insufficient: run.insufficient,
    failed: run.failed,
    links: { self: `/v1/batches/${run.id}` },
  };
}

/** A run whose files are past their retention (the manifest's Expires) is gone, like a deleted one. */
function expired(run: BatchRun): boolean {
  const expires = expiresAt(run);
  return expires !== undefined && Date.now() > expires;
}

/**
 * Batch runs in the FHIR Bulk Data pattern: `POST …/batches` → 202 + an absolute Content-Location; the status URL
 * answers 202 with X-Progress while it runs, 200 with the completion manifest (and Expires) when done; `DELETE`
 * cancels, and the run is then 404. Every error here is an OperationOutcome, as Bulk Data clients expect.
 */
export function batchRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  const client = requireRole(deps, 'client');
  app.onError((err, c) => {
    if (err instanceof Problem) return outcomeResponse(c, err);
    if (err instanceof HTTPException && err.status < 500)
      return outcomeResponse(c, new Problem('invalid_request', err.message));
    throw err; // the app's handler logs it and answers 500
  });

  app.post('/models/:model/batches', client, async (c) => {
    const model = resolveModel(c, deps);
    const body = parseBody(batchRequest, await readJson(c));
    const run = await deps.batches.submit(c.get('principal')!, model, body);
    const status = new URL(`/v1/batches/${run.id}`, c.req.url).href;
    c.header('content-location', status);
    c.header('location', status);
    return c.json(viewOf(run, c.get('principal')), 202);
  });

  app.get('/batches/:id', client, async (c) => {
    const principal = c.get('principal');
    const run = await deps.batches.visible(principal!, c.req.param('id'));
    const runView = (r: BatchRun) => viewOf(r, principal);
    if (run.state === 'queued' || run.state === 'running') {
      c.header('x-progress', progress(run));
      c.header('retry-after', '2');
      return c.json(runView(run), 202);
    }
    if (run.state === 'cancelled' || expired(run))
      throw new Problem('not_found', 'this run was deleted or has expired');
    if (run.state === 'completed') {
      const hold = await deps.batchReviews.holdOf(run);
      const release = releaseOf(run, hold);
      // a whole run held for review is still in progress for a Bulk Data client: it polls on until the release
      if (release === 'awaiting_review') {
        c.header('x-progress', `awaiting_review: ${run.scored} scored rows held for clinician review`);
        c.header('retry-after', '60');
        return c.json({ ...runView(run), state: 'awaiting_review', review: reviewView(run, hold) }, 202);
      }
      if (release === 'rejected')
        throw new Problem('output_rejected', 'a reviewer rejected this run: no file is served');
      c.header('expires', new Date(expiresAt(run) as number).toUTCString());
      const request = run.scheduleId ? `schedule:${run.scheduleId}` : `/v1/models/${run.model}/batches`;
      // a run published to a bucket lists its files there, as signed URLs
      const manifest = await deps.batches.manifestFor(run, hold, bulkManifest(run, request, hold));
      // Bulk Data clients expect absolute file URLs
      const absolute = (f: { url: string }) => ({ ...f, url: new URL(f.url, c.req.url).href });
      return c.json({
        ...manifest,
        request: new URL(request.startsWith('/') ? request : `/v1/schedules`, c.req.url).href,
        output: manifest.output.map(absolute),
        error: manifest.error.map(absolute),
      });
    }
    if (run.state === 'skipped') return c.json({ ...runView(run), reason: run.error });
    throw new Problem('run_failed', run.error ?? 'the run failed', { extensions: { run: runView(run) } });
  });

  app.delete('/batches/:id', client, async (c) => {
    const run = await deps.batches.cancel(c.get('principal')!, c.req.param('id'));
    return c.json(viewOf(run, c.get('principal')), 202);
  });

  app.get('/batches/:id/files/:file', client, async (c) => {
    const run = await deps.batches.visible(c.get('principal')!, c.req.param('id'));
    const file = c.req.param('file');
    const shadowVersion = Object.keys(run.shadowBytes).find((v) => shadowFileName(v) === file);
    const known =
      file === 'output.ndjson' || file === 'errors.ndjson' || (file === HELD_FILE && run.review === 'above-threshold');
    if (run.state !== 'completed' || expired(run) || (!known && !shadowVersion)) {
      throw new Problem('not_found', 'no such file');
    }
    // clinician review: held files are refused (409, or 410 once rejected) until a reviewer approves them
    const refusal = fileRefusal(run, await deps.batchReviews.holdOf(run), file);
    if (refusal) throw refusal;
    const key = shadowVersion ? shadowOutputKey(run, shadowVersion) : outputKey(run, file as 'output.ndjson');
    // opened before the response starts, so a missing or tampered-with file is a 404, not an empty 200
    const source = await deps.batches.storage.openOutput(key).catch((err) => {
      if (err instanceof StorageError) throw new Problem('not_found', 'no such file');
      throw err;
    });
    c.header('content-type', 'application/fhir+ndjson');
    return stream(c, async (s) => {
      s.onAbort(() => {
        source.destroy();
      });
      for await (const chunk of source) await s.write(chunk as Uint8Array);
    });
  });
  return app;
}
