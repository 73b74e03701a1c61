/**
 * `npm run models:build`: writes the ONNX file of every version listed in models/<name>/model.yaml, then records each
 * file's sha256 in that manifest (YAML Document API, so comments and key order survive). Deterministic: the same
 * sources give the same bytes.
 *
 * NEWS2 reads the chart from models/news2/news2-chart.json, a copy of ../shared/data/news2.json made on the first
 * build; the copy wins, so the build does not need shared/. similar-cases embeds models/similar-cases/corpus.json
 * (the manifest's output.corpus), so editing the corpus needs a rebuild.
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import YAML from 'yaml';
import { buildDeteriorationModel } from './deterioration/graph.ts';
import { buildNews2Model, type News2Chart } from './news2/graph.ts';
import { BACKGROUND, buildNoteTriageModel, LEXICONS } from './note-triage/graph.ts';
import { buildProfiles, referenceNdjson } from './profiles.ts';
import { buildReadmissionModel } from './readmission/graph.ts';
import { buildSimilarCasesModel, checkCorpus } from './similar-cases/graph.ts';

export const MODELS_DIR = dirname(fileURLToPath(import.meta.url));
const SHARED_CHART = resolve(MODELS_DIR, '../../shared/data/news2.json');
const CHART = join(MODELS_DIR, 'news2/news2-chart.json');

/** The parts of a manifest the build reads (the registry validates the rest). */
interface ManifestView {
  features?: { name: string; values?: string[] }[];
  document?: { hashBuckets: number };
  output: { extras?: { as: string; names?: string[]; labels?: string[] }[]; labels?: string[]; corpus?: string };
  versions: { version: string; runtime: { path: string }; evidence?: { changeApprovals?: { uri: string }[] } }[];
}

export interface Artifact {
  model: string;
  version: string;
  /** absolute path of the .onnx file */
  file: string;
  bytes: Uint8Array;
  sha256: string;
}

export function readNews2Chart(): News2Chart {
  if (!existsSync(CHART)) copyFileSync(SHARED_CHART, CHART);
  return JSON.parse(readFileSync(CHART, 'utf8')) as News2Chart;
}

const featuresOf = (m: ManifestView) => m.features ?? [];
function hashBucketsOf(model: string, m: ManifestView): number {
  const buckets = m.document?.hashBuckets;
  if (buckets === undefined) throw new Error(`${model}: the manifest has no document.hashBuckets`);
  return buckets;
}

const builders: Record<string, (manifest: ManifestView, version: string) => Uint8Array> = {
  news2: (m, version) => {
    if (version !== '1') throw new Error(`news2: no graph for version ${version}`);
    const extra = (as: string) => m.output.extras?.find((e) => e.as === as);
    return buildNews2Model(readNews2Chart(), {
      features: featuresOf(m).map((f) => f.name),
      consciousnessValues: featuresOf(m).find((f) => f.name === 'consciousness')?.values ?? [],
      subscoreNames: extra('subscores')?.names ?? [],
      bandLabels: extra('clinicalRisk')?.labels ?? [],
    });
  },
  deterioration: (m, version) =>
    buildDeteriorationModel(
      version,
      featuresOf(m).map((f) => f.name),
    ),
  'note-triage': (m, version) => {
    if (version !== '1') throw new Error(`note-triage: no graph for version ${version}`);
    return buildNoteTriageModel({ labels: m.output.labels ?? [], hashBuckets: hashBucketsOf('note-triage', m) });
  },
  'similar-cases': (m, version) => {
    if (version !== '1') throw new Error(`similar-cases: no graph for version ${version}`);
    const dir = join(MODELS_DIR, 'similar-cases');
    const file = resolve(dir, m.output.corpus ?? 'corpus.json');
    if (relative(dir, file).startsWith('..')) throw new Error(`similar-cases: bad corpus ${m.output.corpus}`);
    const corpus = checkCorpus(JSON.parse(readFileSync(file, 'utf8')));
    return buildSimilarCasesModel({ hashBuckets: hashBucketsOf('similar-cases', m), corpus });
  },
  readmission: (m, version) =>
    buildReadmissionModel(
      version,
      featuresOf(m).map((f) => f.name),
    ),
};

const manifestPath = (model: string) => join(MODELS_DIR, model, 'model.yaml');

const sha256Of = (bytes: Uint8Array | string) => createHash('sha256').update(bytes).digest('hex');

/**
 * What each bundled model's `datasetVersion` stands for, as bytes: its sha256 is `evidence.datasetSha256`. The models
 * have no training data, so it is what their behaviour was built or checked on: the NEWS2 chart, the synthetic
 * reference populations of models/profiles.ts, the note-triage lexicon, the similar-cases corpus.
 */
const datasets: Record<string, () => Uint8Array | string> = {
  news2: () => JSON.stringify(readNews2Chart()),
  deterioration: () => referenceNdjson('deterioration') ?? '',
  readmission: () => referenceNdjson('readmission') ?? '',
  'note-triage': () => JSON.stringify({ lexicons: LEXICONS, background: BACKGROUND }),
  'similar-cases': () => readFileSync(join(MODELS_DIR, 'similar-cases', 'corpus.json')),
};

/** The dataset hash each bundled model's versions carry (see `datasets`). */
export function datasetSha256(model: string): string {
  const dataset = datasets[model];
  if (!dataset) throw new Error(`${model}: no dataset to hash`);
  return sha256Of(dataset());
}

/** Builds every version of every model in memory; writes nothing (except the first copy of the NEWS2 chart). */
export function buildAll(): Artifact[] {
  return Object.entries(builders).flatMap(([model, build]) => {
    const manifest = YAML.parse(readFileSync(manifestPath(model), 'utf8')) as ManifestView;
    return manifest.versions.map(({ version, runtime }) => {
      const file = resolve(MODELS_DIR, model, runtime.path);
      if (relative(join(MODELS_DIR, model), file).startsWith('..')) throw new Error(`${model}: bad ${runtime.path}`);
      const bytes = build(manifest, version);
      return { model, version, file, bytes, sha256: createHash('sha256').update(bytes).digest('hex') };
    });
  });
}

async function main(): Promise<void> {
  const artifacts = buildAll();
  for (const a of artifacts) {
    mkdirSync(dirname(a.file), { recursive: true });
    writeFileSync(a.file, a.bytes);
    console.log(`${relative(MODELS_DIR, a.file)}  ${a.bytes.length} bytes  sha256 ${a.sha256}`);
  }
  for (const model of new Set(artifacts.map((a) => a.model))) {
    const path = manifestPath(model);
    const doc = YAML.parseDocument(readFileSync(path, 'utf8'));
    const versions = (doc.toJS() as ManifestView).versions;
    for (const a of artifacts.filter((x) => x.model === model)) {
      doc.setIn(['versions', versions.findIndex((v) => v.version === a.version), 'runtime', 'sha256'], a.sha256);
    }
    // release evidence: the dataset's hash, and the hashes of the change-approval records beside the manifest
    versions.forEach((v, i) => {
      if (!v.evidence) return;
      doc.setIn(['versions', i, 'evidence', 'datasetSha256'], datasetSha256(model));
      v.evidence.changeApprovals?.forEach((c, j) => {
        if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(c.uri)) return; // a remote record: its owner keeps the hash
        const sha = sha256Of(readFileSync(resolve(MODELS_DIR, model, c.uri)));
        doc.setIn(['versions', i, 'evidence', 'changeApprovals', j, 'sha256'], sha);
      });
    });
    writeFileSync(path, doc.toString({ lineWidth: 120, flowCollectionPadding: false }));
  }
  // reference profiles last: they load the manifests, which must carry the new sha256s
  for (const file of await buildProfiles(MODELS_DIR)) console.log(`${relative(MODELS_DIR, file)}  reference profile`);
  if (existsSync(SHARED_CHART) && readFileSync(SHARED_CHART, 'utf8') !== readFileSync(CHART, 'utf8')) {
    console.warn(`note: ${relative(process.cwd(), CHART)} differs from ${SHARED_CHART}; the build used the copy`);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) await main();
