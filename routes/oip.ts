import { Hono, type MiddlewareHandler } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { z } from 'zod';
import { type AppContext, type AppDeps, type AppEnv, resolveModel } from '../src/context.ts';
import {
  DATATYPES,
  inputMetadata,
  outputMetadata,
  outputNames,
  retarget,
  toInstances,
  toOutputs,
} from '../src/oip/tensors.ts';
import { Problem } from '../src/platform/errors.ts';
import { problemResponse, readJson, requireRole } from '../src/platform/http.ts';
import { parseBody, type RouteDoc, TRIAGE_VERSION } from '../src/platform/openapi.ts';
import type { CatalogModel } from '../src/serving/catalog.ts';
import { SILENT_ACTION } from '../src/serving/refusals.ts';
import { assertReady } from './health.ts';
import { endpointFor } from './models.ts';
import {
  DEADLINE_HEADER,
  parseDeadline,
  parseSubjectKey,
  SUBJECT_HEADER,
  SYNC_SCORING_ERRORS,
  scoredResponse,
} from './predict.ts';

const parameters = z
  .record(z.string(), z.union([z.string(), z.number(), z.boolean()]))
  .meta({ description: 'OIP parameters: none are read' });
const metadataTensor = z.object({ name: z.string(), datatype: z.enum(DATATYPES), shape: z.array(z.int()) });

export const inferRequest = z.object({
  id: z.string().max(256).optional(),
  parameters: parameters.optional(),
  inputs: z
    .array(
      z.object({
        name: z.string().meta({ description: 'a feature name, or `features` for the [N, F] matrix' }),
        shape: z
          .array(z.int().min(0))
          .min(1)
          .max(2)
          .meta({ description: '[N] or [N, 1] per feature; [N, F] for `features`' }),
        datatype: z.enum(DATATYPES).meta({
          description: 'numeric for number and integer features, BOOL for booleans, BYTES for enums',
        }),
        parameters: parameters.optional(),
        data: z.array(z.unknown()).meta({ description: 'N values, row-major; nested arrays are flattened' }),
      }),
    )
    .min(1),
  outputs: z.array(z.object({ name: z.string(), parameters: parameters.optional() })).optional(),
});

const inferResponse = z.object({
  model_name: z.string(),
  model_version: z.string(),
  id: z.string().optional(),
  parameters: parameters.meta({ description: 'owner, tier, threshold, request_id, fallback' }),
  outputs: z.array(metadataTensor.extend({ data: z.array(z.unknown()), parameters: parameters.optional() })),
});

const doc = (d: Omit<RouteDoc, 'tag' | 'errorShape'>): RouteDoc => ({ ...d, tag: 'oip-v2', errorShape: 'oip' });

export const oipDocs: RouteDoc[] = [
  doc({
    method: 'get',
    path: '/v2',
    summary: 'OIP v2 server metadata',
    auth: ['client', 'reviewer'],
    responses: {
      200: {
        description: 'server metadata',
        schema: z.object({ name: z.string(), version: z.string(), extensions: z.array(z.string()) }),
      },
    },
  }),
  doc({
    method: 'get',
    path: '/v2/health/live',
    summary: 'OIP v2 server live',
    auth: 'ops',
    responses: { 200: { description: 'live', schema: z.object({ live: z.boolean() }) } },
  }),
  doc({
    method: 'get',
    path: '/v2/health/ready',
    summary: 'OIP v2 server ready: Redis reachable, sync models warm (as /readyz)',
    auth: 'ops',
    responses: { 200: { description: 'ready', schema: z.object({ ready: z.boolean() }) } },
    errors: ['not_ready'],
  }),
  doc({
    method: 'get',
    path: '/v2/models/{model}',
    summary: 'OIP v2 model metadata: one input tensor per feature, one output tensor per prediction field',
    auth: ['client', 'reviewer'],
    responses: {
      200: {
        description: 'model metadata',
        schema: z.object({
          name: z.string(),
          versions: z.array(z.string()),
          platform: z.string(),
          inputs: z.array(metadataTensor),
          outputs: z.array(metadataTensor),
        }),
      },
    },
    errors: ['model_not_found'],
  }),
  doc({
    method: 'get',
    path: '/v2/models/{model}/ready',
    summary: 'OIP v2 model ready: a warm sync model (409 wrong_tier for another tier, 503 not_ready until warm)',
    auth: ['client', 'reviewer'],
    responses: { 200: { description: 'ready', schema: z.object({ name: z.string(), ready: z.boolean() }) } },
    errors: ['model_not_found', 'wrong_tier', 'not_ready'],
  }),
  doc({
    method: 'post',
    path: '/v2/models/{model}/infer',
    summary: 'OIP v2 inference on a sync model: the same scorer, deadline, admission and checks as v1 predict',
    auth: ['client'],
    body: inferRequest,
    responses: { 200: { description: 'the output tensors', schema: inferResponse } },
    errors: SYNC_SCORING_ERRORS,
  }),
];

/**
 * OIP's error object is `{"error": "<message>"}`; Triage's is problem+json with a stable code. One body is both: the
 * problem carries `error` as an extension member (RFC 9457 allows them), so OIP clients read `error` and Triage
 * clients branch on `code`.
 */
function oipError(c: AppContext, err: Problem): Response {
  return problemResponse(
    c,
    new Problem(err.code, err.message, { extensions: { ...err.extensions, error: err.message }, headers: err.headers }),
  );
}

function platformOf(model: CatalogModel): string {
  const kind = model.manifest.versions.find((v) => v.version === model.version)?.runtime.kind;
  return kind === 'onnx' ? 'onnxruntime_onnx' : `triage_${kind ?? 'unknown'}`;
}

/**
 * Only sync models infer over OIP: another tier's model is a 409 pointing at its endpoint, for `ready` too (OIP reads
 * any 4xx there as "not ready"; a 503 is kept for a sync model that is not warm yet, which may change).
 */
function assertSyncTier(model: CatalogModel): NonNullable<CatalogModel['manifest']['sync']> {
  if (model.tier === 'sync' && model.manifest.sync) return model.manifest.sync;
  const endpoint = Object.values(endpointFor(model))[0] as string;
  throw new Problem('wrong_tier', `"${model.name}" is a ${model.tier} model: use ${endpoint}`, {
    extensions: { tier: model.tier, endpoint },
  });
}

/** Open Inference Protocol v2 (KServe, Triton and Seldon clients), mapped onto the sync tier. */
export function oipRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  const reader = requireRole(deps, 'client', 'reviewer');
  // probes, like /healthz and /readyz: open inside a cluster, else admin-only
  const ops: MiddlewareHandler<AppEnv> = deps.options.openOpsEndpoints
    ? (_c, next) => next()
    : requireRole(deps, 'admin');
  app.onError((err, c) => {
    if (err instanceof Problem) return oipError(c, err);
    if (err instanceof HTTPException && err.status < 500)
      return oipError(c, new Problem('invalid_request', err.message));
    throw err;
  });

  app.get('/', reader, (c) => c.json({ name: 'triage', version: TRIAGE_VERSION, extensions: [] }));

  app.get('/health/live', ops, (c) => c.json({ live: true }));
  app.get('/health/ready', ops, async (c) => {
    await assertReady(deps);
    return c.json({ ready: true });
  });

  app.get('/models/:model', reader, (c) => {
    const model = resolveModel(c, deps);
    return c.json({
      name: model.name,
      versions: model.manifest.versions.map((v) => v.version),
      platform: platformOf(model),
      inputs: inputMetadata(model.manifest),
      outputs: outputMetadata(model.manifest.output),
    });
  });

  app.get('/models/:model/ready', reader, (c) => {
    const model = resolveModel(c, deps);
    assertSyncTier(model);
    const state = deps.sync.status(model.name);
    if (state?.state !== 'warm') {
      throw new Problem('not_ready', `model "${model.name}" is not being served: ${state?.refusal ?? 'not loaded'}`, {
        headers: { 'retry-after': '30' },
      });
    }
    return c.json({ name: model.name, ready: true });
  });

  app.post('/models/:model/infer', requireRole(deps, 'client'), async (c) => {
    const model = resolveModel(c, deps);
    const { manifest } = model;
    const sync = assertSyncTier(model);
    const deadlineMs = parseDeadline(c.req.header(DEADLINE_HEADER), sync.latencyBudgetMs);
    c.set('deadlineMs', deadlineMs);
    const request = parseBody(inferRequest, await readJson(c), { withPath: true });
    const known = outputNames(manifest.output);
    const wanted = request.outputs && new Set(request.outputs.map((o) => o.name));
    for (const name of wanted ?? []) {
      if (!known.has(name)) throw new Problem('invalid_request', `no output tensor "${name}"`);
    }
    const { instances, pointerOf } = toInstances(manifest.features, request.inputs);
    if (instances.length === 0) throw new Problem('invalid_request', 'the input tensors hold no rows');
    if (instances.length > sync.maxInstances) {
      throw new Problem('batch_too_large', `at most ${sync.maxInstances} rows per request`);
    }
    const subjectKey = parseSubjectKey(c.req.header(SUBJECT_HEADER));
    const result = await deps.sync
      .predict(model, instances, deadlineMs, {
        // what an outcome reported later names each row by (`request:<id>#<i>`), as on the v1 door
        requestId: c.get('requestId'),
        owner: c.get('principal')?.id,
        arrivedAt: c.get('arrivedAt'),
        ...(subjectKey ? { subjectKey } : {}),
      })
      .catch((err: unknown) => Promise.reject(retarget(err, pointerOf)));
    return scoredResponse(c, model, result.version, {
      model_name: manifest.name,
      model_version: result.version,
      ...(request.id !== undefined ? { id: request.id } : {}),
      parameters: {
        owner: manifest.owner.team,
        tier: model.tier,
        threshold: manifest.output.threshold,
        request_id: c.get('requestId'),
        ...(result.fallback ? { fallback: true, fallback_from: result.fallback.from } : {}),
        // a silent deployment: scored and recorded, no output shown, and what to do instead
        ...(result.silent ? { silent: true, action: SILENT_ACTION } : {}),
      },
      outputs: result.silent ? [] : toOutputs(manifest.output, result.predictions, wanted),
    });
  });
  return app;
}
