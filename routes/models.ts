import { Hono } from 'hono';
import type { AppDeps, AppEnv } from '../src/context.ts';
import { requireRole } from '../src/platform/http.ts';
import { resolveModel } from '../src/platform/model-lookup.ts';
import type { ServedModel } from '../src/sync/service.ts';

/** The registry, as a client sees it: tiers, versions, owners, input schema and how to call each model. */
export function modelRoutes(deps: AppDeps) {
  const app = new Hono<AppEnv>();
  const auth = requireRole(deps, 'client', 'reviewer');

  app.get('/', auth, (c) => {
    const principal = c.get('principal');
    const visible = deps.models
      .list()
      .filter(
        (m) => principal?.role !== 'client' || principal.models.has('*') || principal.models.has(m.manifest.name),
      );
    return c.json({ models: visible.map(summary) });
  });

  app.get('/:model', auth, (c) => c.json(detail(resolveModel(c, deps))));
  return app;
}

function summary(m: ServedModel) {
  const { manifest } = m;
  return {
    name: manifest.name,
    title: manifest.title,
    owner: manifest.owner,
    tier: m.tier,
    state: m.state,
    version: m.version,
    links: { self: `/v1/models/${manifest.name}`, ...endpointFor(m) },
  };
}

function detail(m: ServedModel) {
  const { manifest } = m;
  return {
    ...summary(m),
    description: manifest.description,
    disclaimer: manifest.disclaimer,
    tierReasons: m.tierReasons,
    ...(m.refusal ? { refusal: m.refusal } : {}),
    ...(m.warmupP99Ms !== undefined ? { warmupP99Ms: Number(m.warmupP99Ms.toFixed(3)) } : {}),
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

export function endpointFor(m: ServedModel): Record<string, string> {
  const base = `/v1/models/${m.manifest.name}`;
  if (m.tier === 'sync') return { predict: `${base}/predict` };
  if (m.tier === 'async') return { jobs: `${base}/jobs` };
  return { batches: `${base}/batches` };
}
