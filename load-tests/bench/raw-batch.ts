/**
 * The batch section's baseline, in its own process: the work of a batch run minus Triage. Reads the same NDJSON file
 * line by line, JSON.parses each row, encodes it into a Float32Array chunk of the manifest's `batch.chunkSize`, runs
 * one onnxruntime-node `session.run` per chunk (the session options Triage uses), and writes one NDJSON output line
 * per row (id, model, version and the prediction in Triage's shape) to a file. No validation, no checkpoints, no
 * fsync, no Redis. It runs at the batch thread's nice value (RAW_NICE): on a shared machine a baseline at a higher
 * priority than the run it is compared with would measure the scheduler, not Triage.
 *
 * env: RAW_MODELS_DIR, RAW_MODEL, RAW_INPUT (absolute path), RAW_OUTPUT (absolute path), RAW_THREADS (1),
 * RAW_CHUNK (the chunk size), RAW_NICE (0).
 * Prints one line `RAW_JSON {…}`.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { setPriority } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import * as ort from 'onnxruntime-node';
import { DEFAULT_CHUNK_SIZE } from '../../src/batch/chunk.ts';
import { loadModel } from '../../src/registry/load.ts';

const modelsDir = process.env.RAW_MODELS_DIR as string;
const modelName = process.env.RAW_MODEL ?? 'news2';
const inputPath = process.env.RAW_INPUT as string;
const outputPath = process.env.RAW_OUTPUT as string;
const threads = Number(process.env.RAW_THREADS ?? 1);
const nice = Number(process.env.RAW_NICE ?? 0);
if (!modelsDir || !inputPath || !outputPath) throw new Error('set RAW_MODELS_DIR, RAW_INPUT and RAW_OUTPUT');

const loaded = await loadModel(path.join(modelsDir, modelName), modelsDir, 60_000);
const { manifest } = loaded;
const version = loaded.manifest.routing.primary;
const artifact = loaded.artifacts.get(version) as string;
const features = manifest.features;
const width = features.length;
const chunkSize = Number(process.env.RAW_CHUNK ?? manifest.batch?.chunkSize ?? DEFAULT_CHUNK_SIZE);
if (manifest.output.kind !== 'score') {
  throw new Error(`raw-batch handles score models, ${modelName} is ${manifest.output.kind}`);
}
const output = manifest.output;

const encoders = features.map((f): ((v: unknown) => number) => {
  if (f.type === 'boolean') return (v) => ((v === undefined ? f.default : v) ? 1 : 0);
  if (f.type === 'enum') return (v) => f.values.indexOf((v ?? f.default) as string);
  return (v) => (v === undefined ? (f.default ?? 0) : (v as number));
});
const round = (v: number) => Math.round(v * 1e6) / 1e6;

if (nice > 0) setPriority(nice);
const t0 = performance.now();
const cpu0 = process.cpuUsage();
const session = await ort.InferenceSession.create(artifact, {
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
  executionMode: 'sequential',
  graphOptimizationLevel: 'all',
});
const out = createWriteStream(outputPath);
const write = (text: string) =>
  out.write(text) ? Promise.resolve() : new Promise<void>((resolve) => out.once('drain', () => resolve()));

let rows = 0;
let chunks = 0;
const input = new Float32Array(chunkSize * width);
let ids: string[] = [];

async function flush(): Promise<void> {
  const n = ids.length;
  if (n === 0) return;
  const result = await session.run({ features: new ort.Tensor('float32', input.slice(0, n * width), [n, width]) });
  const data = (name: string) => result[name]?.data as Float32Array;
  const score = data(output.scoreTensor);
  let text = '';
  for (let r = 0; r < n; r++) {
    const value = round(score[r] as number);
    const positive = value >= output.threshold;
    const prediction: Record<string, unknown> = {
      [output.scoreName]: value,
      verdict: positive ? output.labels.positive : output.labels.negative,
      aboveThreshold: positive,
    };
    for (const extra of output.extras) {
      const t = data(extra.tensor);
      if (extra.kind === 'vector') {
        const named: Record<string, number> = {};
        const w = extra.names.length;
        extra.names.forEach((name, i) => {
          named[name] = round(t[r * w + i] as number);
        });
        prediction[extra.as] = named;
      } else {
        prediction[extra.as] = extra.labels[Math.round(t[r] as number)] ?? null;
      }
    }
    text += `${JSON.stringify({ id: ids[r], model: manifest.name, version, prediction })}\n`;
  }
  await write(text);
  rows += n;
  chunks++;
  ids = [];
}

for await (const line of createInterface({ input: createReadStream(inputPath), crlfDelay: Number.POSITIVE_INFINITY })) {
  if (line === '') continue;
  const row = JSON.parse(line) as Record<string, unknown>;
  const base = ids.length * width;
  for (let c = 0; c < width; c++)
    input[base + c] = (encoders[c] as (v: unknown) => number)(row[features[c]?.name as string]);
  ids.push(String(row.id));
  if (ids.length === chunkSize) await flush();
}
await flush();
await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
const ms = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);
const cpuMs = (cpu.user + cpu.system) / 1000;
await session.release();
process.stdout.write(
  `RAW_JSON ${JSON.stringify({ model: manifest.name, version, rows, chunks, chunkSize, threads, nice, ms, cpuMs, rowsPerSec: (rows * 1000) / ms })}\n`,
);
process.exit(0);
