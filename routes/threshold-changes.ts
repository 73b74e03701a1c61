import { Hono } from 'hono';
import { type AppDeps, type AppEnv, resolveModel } from '../src/context.ts';
import { readJson, requireRole } from '../src/platform/http.ts';
import { asJsonObject, onlyFields } from '../src/platform/json-body.ts';
import type { RouteDoc } from '../src/platform/openapi.ts';

/**
 * Threshold change requests (two people): reviewers and approvers propose with a reason and an evidence link;
 * another person with the approver role approves (applied on every replica) or rejects.
 */
export function thresholdChangeRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  const approver = requireRole(deps, 'approver');

  app.post('/models/:model/threshold-changes', requireRole(deps, 'reviewer', 'approver'), async (c) => {
    const model = resolveModel(c, deps);
    const body = asJsonObject(await readJson(c), '{"threshold", "reason", "evidenceUrl"}');
    onlyFields(body, ['threshold', 'reason', 'evidenceUrl']);
    const change = await deps.thresholdChanges.propose(c.get('principal')!, model, body);
    c.header('location', `/v1/threshold-changes/${change.id}`);
    return c.json(change, 201);
  });

  app.get('/models/:model/threshold-changes', requireRole(deps, 'client', 'reviewer', 'approver'), async (c) => {
    const model = resolveModel(c, deps);
    return c.json({
      model: model.name,
      threshold: model.manifest.output.threshold,
      applied: model.thresholdChange ?? null,
      requests: await deps.thresholdChanges.list(model.name),
    });
  });

  app.get('/threshold-changes/:id', requireRole(deps, 'reviewer', 'approver'), async (c) =>
    c.json(await deps.thresholdChanges.get(c.get('principal')!, c.req.param('id'))),
  );

  for (const decision of ['approve', 'reject'] as const) {
    app.post(`/threshold-changes/:id/${decision}`, approver, async (c) => {
      const body = asJsonObject(await readJson(c), '{"reason"}');
      onlyFields(body, ['reason']);
      return c.json(await deps.thresholdChanges[decision](c.get('principal')!, c.req.param('id'), body.reason));
    });
  }
  return app;
}

/** The document's description of these routes (routes/openapi.ts). */
export const thresholdChangeDocs: RouteDoc[] = [
  {
    method: 'post',
    path: '/v1/models/{model}/threshold-changes',
    summary: 'Propose a threshold change (who, why, evidence): applied only once another person approves it',
    tag: 'releases',
    auth: ['reviewer', 'approver'],
    responses: { 201: { description: 'the change request, proposed' } },
    errors: ['model_not_found', 'invalid_request'],
  },
  {
    method: 'get',
    path: '/v1/models/{model}/threshold-changes',
    summary: "The model's threshold change requests",
    tag: 'releases',
    auth: ['client', 'reviewer', 'approver'],
    responses: { 200: { description: 'the change requests, newest first' } },
    errors: ['model_not_found'],
  },
  {
    method: 'get',
    path: '/v1/threshold-changes/{id}',
    summary: 'One threshold change request',
    tag: 'releases',
    auth: ['reviewer', 'approver'],
    responses: { 200: { description: 'the change request' } },
    errors: ['not_found'],
  },
  ...(['approve', 'reject'] as const).map(
    (decision): RouteDoc => ({
      method: 'post',
      path: `/v1/threshold-changes/{id}/${decision}`,
      summary: `${decision === 'approve' ? 'Approve (and apply on every replica)' : 'Reject'} a change request: by a different person than its proposer`,
      tag: 'releases',
      auth: ['approver'],
      responses: { 200: { description: 'the change request, decided' } },
      errors: ['not_found', 'invalid_request', 'invalid_state', 'forbidden'],
    }),
  ),
];
