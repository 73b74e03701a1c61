/**
 * Reference profiles, made at model build: each model's reference data is encoded exactly as serving encodes it
 * (`encodeRow`), and every feature's distribution is saved as decile bins in `<version>/reference-profile.json`.
 * Monitoring compares live inputs with them (PSI per feature). Each version also scores the reference data, and the
 * shares of its scores in the output histogram's bins are saved beside the inputs' (the score distribution the live
 * one is drawn against).
 *
 * The bundled models carry illustrative weights with no training data, so their reference data is a SYNTHETIC
 * population from a seeded generator (the same file on every build): adult ward vital signs for deterioration and
 * NEWS2, and the sample-discharge generator for readmission. A real model's profile comes from its validation set.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { quantileEdges, shares } from '../src/monitoring/psi.ts';
import { scoreBin, scoreOf, scoreRange } from '../src/monitoring/recorder.ts';
import { SCORE_BINS } from '../src/monitoring/windows.ts';
import { type LoadedModel, loadModel } from '../src/registry/load.ts';
import { PROFILE_FILE, type ReferenceProfile } from '../src/registry/profile.ts';
import type { Feature } from '../src/registry/schema.ts';
import { createOnnxRuntime } from '../src/runtime/onnx.ts';
import { encodeRow } from '../src/serving/features.ts';
import { shapePredictions } from '../src/serving/predictions.ts';
import { mulberry32 } from './prng.ts';
import { generateSample } from './readmission/generate-sample.ts';

const ROWS = 5000;

/** Adult ward observations: mostly well, a tail of unwell patients. */
export function wardVitals(rows: number, seed: number): Record<string, unknown>[] {
  const rand = mulberry32(seed);
  const normal = (mean: number, sd: number) =>
    mean + sd * Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  const clamp = (x: number, lo: number, hi: number) => Math.min(Math.max(x, lo), hi);
  const out: Record<string, unknown>[] = [];
  for (let i = 0; i < rows; i++) {
    const unwell = rand() < 0.15;
    const c = rand();
    out.push({
      age: Math.round(clamp(normal(64, 17), 16, 100)),
      respirationRate: Math.round(clamp(normal(unwell ? 23 : 16, unwell ? 5 : 2.5), 6, 45)),
      spo2: Math.round(clamp(100 - Math.abs(normal(unwell ? 6 : 2.5, unwell ? 4 : 1.5)), 70, 100)),
      spo2Scale: rand() < 0.04 ? 2 : 1,
      onOxygen: rand() < (unwell ? 0.5 : 0.08),
      systolicBP: Math.round(clamp(normal(unwell ? 108 : 128, 18), 60, 220)),
      pulse: Math.round(clamp(normal(unwell ? 105 : 80, 15), 35, 180)),
      consciousness: c < (unwell ? 0.85 : 0.99) ? 'alert' : c < 0.995 ? 'confusion' : 'voice',
      temperature: Math.round(clamp(normal(unwell ? 37.9 : 36.9, 0.6), 34, 41) * 10) / 10,
    });
  }
  return out;
}

const referenceData: Record<string, { source: string; rows: () => Record<string, unknown>[] }> = {
  deterioration: {
    source: `synthetic adult ward vital signs, ${ROWS} rows, seed 41 (models/profiles.ts)`,
    rows: () => wardVitals(ROWS, 41),
  },
  news2: {
    source: `synthetic adult ward vital signs, ${ROWS} rows, seed 42 (models/profiles.ts)`,
    rows: () => wardVitals(ROWS, 42),
  },
  readmission: {
    source: `synthetic discharges (models/readmission/generate-sample.ts), ${ROWS} rows, invalid rows left out`,
    rows: () =>
      generateSample(ROWS)
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  },
};

/** A model's reference data as NDJSON (one row a line, as generated): the content its dataset hash is taken of. */
export function referenceNdjson(model: string): string | undefined {
  const ref = referenceData[model];
  return (
    ref &&
    `${ref
      .rows()
      .map((r) => JSON.stringify(r))
      .join('\n')}\n`
  );
}

/** A feature's bins: deciles of a measure; one bin per value of a flag or an enum. */
function edgesOf(f: Feature, values: number[]): number[] {
  if (f.type === 'boolean') return [0.5];
  if (f.type === 'enum') return f.values.slice(1).map((_, i) => i + 0.5);
  return quantileEdges(values);
}

/** The profile of every version of every model with reference data; written beside each version. */
export async function buildProfiles(modelsDir: string): Promise<string[]> {
  const written: string[] = [];
  for (const [name, ref] of Object.entries(referenceData)) {
    const loaded = await loadModel(join(modelsDir, name), modelsDir, 60_000);
    const { manifest } = loaded;
    const features = manifest.features;
    const encoded = new Float32Array(features.length);
    const columns: number[][] = features.map(() => []);
    const all: number[] = [];
    let rows = 0;
    for (const row of ref.rows()) {
      const { id: _id, ...values } = row;
      const kept = Object.fromEntries(Object.entries(values).filter(([k]) => features.some((f) => f.name === k)));
      if (encodeRow(features, kept, encoded, 0, '')) continue; // invalid reference rows are left out
      features.forEach((_, c) => void columns[c]?.push(encoded[c] as number));
      all.push(...encoded);
      rows++;
    }
    const profileFeatures: ReferenceProfile['features'] = {};
    features.forEach((f, c) => {
      const values = columns[c] as number[];
      const edges = edgesOf(f, values);
      profileFeatures[f.name] = { edges, expected: shares(edges, values) };
    });
    for (const v of manifest.versions) {
      const profile: ReferenceProfile = {
        model: name,
        version: v.version,
        source: ref.source,
        rows,
        features: profileFeatures,
        ...(await outputShares(loaded, v.version, Float32Array.from(all), rows)),
      };
      const file = join(modelsDir, name, v.version, PROFILE_FILE);
      writeFileSync(file, `${JSON.stringify(profile, null, 2)}\n`);
      written.push(file);
    }
  }
  return written;
}

/** The version's scores of the reference rows, as shares of the monitoring output histogram's bins. */
async function outputShares(
  loaded: LoadedModel,
  version: string,
  input: Float32Array,
  rows: number,
): Promise<Pick<ReferenceProfile, 'output'>> {
  const artifact = loaded.artifacts.get(version);
  if (!artifact) return {};
  const output = loaded.manifest.output;
  const runtime = await createOnnxRuntime(artifact, loaded.manifest.features.length, { threads: 1 });
  try {
    const predictions = shapePredictions(output, await runtime.run(input, rows), rows, loaded.corpus);
    const [lo, hi] = scoreRange(output);
    const width = (hi - lo) / SCORE_BINS;
    const counts = new Array<number>(SCORE_BINS).fill(0);
    for (const p of predictions) {
      const bin = scoreBin(scoreOf(output, p).score, lo, width);
      counts[bin] = (counts[bin] as number) + 1;
    }
    return { output: { expected: counts.map((c) => Math.round((c / rows) * 1e4) / 1e4) } };
  } finally {
    await runtime.close();
  }
}
