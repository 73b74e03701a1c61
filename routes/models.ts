import { Hono } from 'hono';
import { z } from 'zod';
import { type AppDeps, type AppEnv, resolveModel } from '../src/context.ts';
import { Problem } from '../src/platform/errors.ts';
import { requireRole } from '../src/platform/http.ts';
import type { RouteDoc } from '../src/platform/openapi.ts';
import { missingEvidence } from '../src/registry/evidence.ts';
import type { CatalogModel } from '../src/serving/catalog.ts';

const summary_ = z.looseObject({
  name: z.string(),
  title: z.string(),
  owner: z.object({ team: z.string(), contact: z.string() }),
  tier: z.enum(['sync', 'async', 'batch']),
  state: z.string(),
  version: z.string(),
  links: z.record(z.string(), z.string()),
});

export const modelDocs: RouteDoc[] = [
  {
    method: 'get',
    path: '/v1/models',
    summary: 'The models this caller may use',
    tag: 'models',
    auth: ['client', 'reviewer'],
    responses: { 200: { description: 'the registry', schema: z.object({ models: z.array(summary_) }) } },
  },
  {
    method: 'get',
    path: '/v1/models/{model}',
    summary: 'One model: tier and why, versions and evidence, input features, output',
    tag: 'models',
    auth: ['client', 'reviewer'],
    responses: { 200: { description: 'the model', schema: summary_ } },
    errors: ['model_not_found'],
  },
  {
    method: 'get',
    path: '/v1/models/{model}/versions/{version}',
    summary:
      'One version: its runtime, role and release evidence (dataset hash, label definition, de-identification, lineage, clinical reviews, change approvals) and what promotion would still need',
    tag: 'models',
    auth: ['client', 'reviewer'],
    responses: {
      200: {
        description: 'the version',
        schema: z.looseObject({
          model: z.string(),
          version: z.string(),
          role: z.string(),
          evidence: z.looseObject({}).nullable(),
          promotable: z.object({ complete: z.boolean(), missing: z.array(z.string()) }),
        }),
      },
    },
    errors: ['model_not_found', 'not_found'],
  },
];

/** The registry, as a client sees it: tiers, versions, owners, input schema and how to call each model. */
export function modelRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  const auth = requireRole(deps, 'client', 'reviewer');

  app.get('/', auth, (c) => {
    const principal = c.get('principal');
    const visible = deps.catalog
      .list()
      .filter(
        (m) => principal?.role !== 'client' || principal.models.has('*') || principal.models.has(m.manifest.name),
      );
    return c.json({ models: visible.map((m) => summary(deps, m)) });
  });

  app.get('/:model', auth, (c) => c.json(detail(deps, resolveModel(c, deps))));

  app.get('/:model/versions/:version', auth, (c) => {
    const m = resolveModel(c, deps);
    const v = m.manifest.versions.find((x) => x.version === c.req.param('version'));
    if (!v) throw new Problem('not_found', `model "${m.manifest.name}" has no such version`);
    const missing = missingEvidence(v.evidence);
    return c.json({
      model: m.manifest.name,
      version: v.version,
      description: v.description,
      runtime: v.runtime.kind,
      ...(v.runtime.kind === 'onnx' ? { sha256: v.runtime.sha256 } : {}),
      role: roleOf(m, v.version),
      evidence: v.evidence ?? null,
      // what POST …/routing/promote checks: the evidence a release review needs, by field
      promotable: { complete: missing.length === 0, missing },
      links: { model: `/v1/models/${m.manifest.name}`, monitoring: `/v1/models/${m.manifest.name}/monitoring` },
    });
  });
  return app;
}

/** A sync model's serving state; models of the other tiers are served by their workers. */
function stateOf(deps: AppDeps, m: CatalogModel) {
  return m.tier === 'sync' ? deps.sync.status(m.name) : undefined;
}

function summary(deps: AppDeps, m: CatalogModel) {
  const { manifest } = m;
  return {
    name: manifest.name,
    title: manifest.title,
    owner: manifest.owner,
    tier: m.tier,
    state: stateOf(deps, m)?.state ?? 'warm',
    version: m.version,
    links: { self: `/v1/models/${manifest.name}`, ...endpointFor(m) },
  };
}

function detail(deps: AppDeps, m: CatalogModel) {
  const { manifest } = m;
  const status = stateOf(deps, m);
  return {
    ...summary(deps, m),
    description: manifest.description,
    disclaimer: manifest.disclaimer,
    tierReasons: m.tierReasons,
    ...(status?.refusal ? { refusal: status.refusal } : {}),
    ...(status?.warmupP99Ms !== undefined ? { warmupP99Ms: Number(status.warmupP99Ms.toFixed(3)) } : {}),
    input: { kind: manifest.input, features: manifest.features },
    output: manifest.output,
    sync: manifest.sync,
    versions: manifest.versions.map((v) => ({
      version: v.version,
      description: v.description,
      runtime: v.runtime.kind,
      ...(v.runtime.kind === 'onnx' ? { sha256: v.runtime.sha256 } : {}),
      evidence: v.evidence ?? null,
      role: v.version === m.version ? 'primary' : 'candidate',
    })),
  };
}

function roleOf(m: CatalogModel, version: string): string {
  const r = m.routing;
  if (r.primary === version) return r.silent ? 'silent' : 'primary';
  if (r.canary?.version === version) return 'canary';
  if (r.shadow?.versions.includes(version)) return 'shadow';
  return 'candidate';
}

export function endpointFor(m: CatalogModel): Record<string, string> {
  const base = `/v1/models/${m.manifest.name}`;
  if (m.tier === 'sync') return { predict: `${base}/predict` };
  if (m.tier === 'async') return { jobs: `${base}/jobs` };
  return { batches: `${base}/batches` };
}
