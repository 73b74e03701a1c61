import { createHash } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import YAML from 'yaml';
import { z } from 'zod';
import type { CorpusEntry } from '../serving/predictions.ts';
import { type Classification, classifyTier } from './classify.ts';
import { isLocalArtifact } from './evidence.ts';
import { type ReferenceProfile, readProfile } from './profile.ts';
import { type Manifest, type ModelVersion, manifestSchema } from './schema.ts';

export class ManifestError extends Error {
  override name = 'ManifestError';
}

export interface LoadedModel {
  manifest: Manifest;
  classification: Classification;
  /** the folder holding model.yaml */
  dir: string;
  /** the manifest file, relative to the models dir, for messages */
  file: string;
  /** absolute path of each version's verified artifact */
  artifacts: Map<string, string>;
  /** the reference corpus of a retrieval model, in the order its model indexes it */
  corpus?: CorpusEntry[];
  /** each version's reference profile (input bins of its reference data), where one was built */
  profiles: Map<string, ReferenceProfile>;
}

const corpusSchema = z.array(
  z.object({ id: z.string().min(1), title: z.string().min(1), summary: z.string().optional() }),
);

const manifestNames = ['model.yaml', 'model.yml', 'model.json'];

function formatIssues(file: string, error: z.ZodError): string {
  return error.issues
    .slice(0, 10)
    .map((i) => `${file}: ${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`)
    .join('\n');
}

async function sha256File(file: string): Promise<string> {
  return createHash('sha256')
    .update(await readFile(file))
    .digest('hex');
}

/** Loads, validates and verifies one model folder. Errors name the file and the field. */
export async function loadModel(dir: string, rootForMessages: string, syncCeilingMs: number): Promise<LoadedModel> {
  let manifestPath: string | undefined;
  for (const name of manifestNames) {
    const candidate = path.join(dir, name);
    if (
      await stat(candidate).then(
        (s) => s.isFile(),
        () => false,
      )
    ) {
      manifestPath = candidate;
      break;
    }
  }
  const file = path.relative(rootForMessages, manifestPath ?? path.join(dir, 'model.yaml'));
  if (!manifestPath) throw new ManifestError(`${file}: missing (expected one of ${manifestNames.join(', ')})`);

  let raw: unknown;
  try {
    const text = await readFile(manifestPath, 'utf8');
    raw = manifestPath.endsWith('.json') ? JSON.parse(text) : YAML.parse(text);
  } catch (err) {
    throw new ManifestError(`${file}: cannot parse: ${(err as Error).message.split('\n')[0]}`);
  }
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) throw new ManifestError(formatIssues(file, parsed.error));
  const m = parsed.data;
  const fail = (field: string, message: string): never => {
    throw new ManifestError(`${file}: ${field}: ${message}`);
  };

  if (m.name !== path.basename(dir)) fail('name', `"${m.name}" must equal its folder name "${path.basename(dir)}"`);
  const featureNames = new Set<string>();
  m.features.forEach((f, i) => {
    if (featureNames.has(f.name)) fail(`features.${i}.name`, `duplicate feature "${f.name}"`);
    featureNames.add(f.name);
  });

  const versions = new Map<string, ModelVersion>();
  const artifacts = new Map<string, string>();
  for (const [i, v] of m.versions.entries()) {
    if (versions.has(v.version)) fail(`versions.${i}.version`, `duplicate version "${v.version}"`);
    versions.set(v.version, v);
    const runtime = v.runtime;
    if (runtime.kind !== 'onnx') continue; // remote versions have no local artifact
    const artifact = path.resolve(dir, runtime.path);
    if (!artifact.startsWith(path.resolve(dir) + path.sep)) {
      fail(`versions.${i}.runtime.path`, `"${runtime.path}" points outside the model folder`);
    }
    const actual = await sha256File(artifact).catch((err: NodeJS.ErrnoException) =>
      fail(`versions.${i}.runtime.path`, `cannot read ${runtime.path} (${err.code ?? err.message})`),
    );
    if (actual !== runtime.sha256) {
      fail(`versions.${i}.runtime.sha256`, `${runtime.path} has sha256 ${actual}, manifest says ${runtime.sha256}`);
    }
    artifacts.set(v.version, artifact);
  }
  // change-approval records kept beside the manifest are checked like the artifacts: what was approved is what is here
  for (const [i, v] of m.versions.entries()) {
    for (const [j, a] of (v.evidence?.changeApprovals ?? []).entries()) {
      if (!isLocalArtifact(a.uri)) continue;
      const field = `versions.${i}.evidence.changeApprovals.${j}`;
      const local = path.resolve(dir, a.uri);
      if (!local.startsWith(path.resolve(dir) + path.sep))
        fail(`${field}.uri`, `"${a.uri}" points outside the model folder`);
      const actual = await sha256File(local).catch((err: NodeJS.ErrnoException) =>
        fail(`${field}.uri`, `cannot read ${a.uri} (${err.code ?? err.message})`),
      );
      if (actual !== a.sha256) fail(`${field}.sha256`, `${a.uri} has sha256 ${actual}, manifest says ${a.sha256}`);
    }
  }
  for (const [i, v] of m.versions.entries()) {
    const target = v.evidence?.rollbackTarget;
    if (target && !versions.has(target)) fail(`versions.${i}.evidence.rollbackTarget`, `unknown version "${target}"`);
    if (v.fallback !== undefined) {
      const fallback = versions.get(v.fallback);
      if (!fallback) fail(`versions.${i}.fallback`, `unknown version "${v.fallback}"`);
      if (fallback?.runtime.kind !== 'onnx')
        fail(`versions.${i}.fallback`, 'a fallback must be an in-process (onnx) version');
      if (!fallback?.evidence) fail(`versions.${i}.fallback`, `version "${v.fallback}" has no release evidence`);
    }
  }
  const canary = m.routing.canary;
  if (canary) {
    const v = versions.get(canary.version);
    if (!v) fail('routing.canary.version', `unknown version "${canary.version}"`);
    if (!v?.evidence)
      fail(
        'routing.canary.version',
        `version "${canary.version}" has no release evidence: a canary serves real answers`,
      );
    if (canary.version === m.routing.primary) fail('routing.canary.version', 'the canary must differ from the primary');
  }
  for (const [i, sv] of (m.routing.shadow?.versions ?? []).entries()) {
    if (!versions.has(sv)) fail(`routing.shadow.versions.${i}`, `unknown version "${sv}"`);
    if (sv === m.routing.primary) fail(`routing.shadow.versions.${i}`, 'the primary cannot shadow itself');
  }

  const primary = versions.get(m.routing.primary);
  if (!primary) return fail('routing.primary', `unknown version "${m.routing.primary}"`);
  if (!primary.evidence) {
    fail('routing.primary', `version "${primary.version}" has no release evidence: it can be a shadow, never primary`);
  }
  if (primary.evidence && primary.evidence.approvedThreshold !== m.output.threshold) {
    fail(
      'output.threshold',
      `${m.output.threshold} differs from the threshold approved for version "${primary.version}" (${primary.evidence.approvedThreshold})`,
    );
  }

  const classification = classifyTier(m, syncCeilingMs);
  if (m.tier && m.tier !== classification.tier) {
    fail(
      'tier',
      `declared "${m.tier}" but the model's facts make it "${classification.tier}" (${classification.reasons.join('; ')})`,
    );
  }
  if (classification.tier === 'sync' && !m.sync) fail('sync', 'a sync model needs a sync section (latencyBudgetMs …)');
  if (m.sync && m.sync.latencyBudgetMs > syncCeilingMs) {
    fail('sync.latencyBudgetMs', `${m.sync.latencyBudgetMs} ms exceeds the sync ceiling ${syncCeilingMs} ms`);
  }

  let corpus: CorpusEntry[] | undefined;
  if (m.output.kind === 'retrieval') {
    const corpusPath = path.resolve(dir, m.output.corpus);
    if (!corpusPath.startsWith(path.resolve(dir) + path.sep)) fail('output.corpus', 'points outside the model folder');
    const parsedCorpus = corpusSchema.safeParse(
      await readFile(corpusPath, 'utf8').then(JSON.parse, (err: Error) =>
        fail('output.corpus', `cannot read: ${err.message}`),
      ),
    );
    if (!parsedCorpus.success) fail('output.corpus', 'must be a JSON array of {id, title, summary}');
    corpus = parsedCorpus.data;
  }

  const profiles = new Map<string, ReferenceProfile>();
  for (const v of m.versions) {
    const profile = await readProfile(dir, m, v.version, fail);
    if (profile) profiles.set(v.version, profile);
  }
  return { manifest: m, classification, dir, file, artifacts, profiles, ...(corpus ? { corpus } : {}) };
}

/** Loads every model folder under `modelsDir`; all errors are collected so one start shows them all. */
export async function loadModels(modelsDir: string, syncCeilingMs: number): Promise<LoadedModel[]> {
  const root = path.resolve(modelsDir);
  const entries = await readdir(root, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    throw new ManifestError(`TRIAGE_MODELS_DIR: cannot read ${modelsDir} (${err.code ?? err.message})`);
  });
  const dirs = entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => path.join(root, e.name));
  const results = await Promise.allSettled(
    dirs.map(async (dir) => {
      const hasManifest = await Promise.any(
        manifestNames.map((n) => stat(path.join(dir, n)).then((s) => (s.isFile() ? true : Promise.reject()))),
      ).catch(() => false);
      return hasManifest ? loadModel(dir, path.dirname(root), syncCeilingMs) : undefined;
    }),
  );
  const errors = results.flatMap((r) => (r.status === 'rejected' ? [(r.reason as Error).message] : []));
  if (errors.length > 0) throw new ManifestError(errors.join('\n'));
  const models = results.flatMap((r) => (r.status === 'fulfilled' && r.value ? [r.value] : []));
  if (models.length === 0) throw new ManifestError(`TRIAGE_MODELS_DIR: no model manifests under ${modelsDir}`);
  return models.sort((a, b) => a.manifest.name.localeCompare(b.manifest.name));
}
