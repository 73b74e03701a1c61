/**
 * The work of a batch run's thread, alone and in this process, timed in CPU per row: a news2 NDJSON file (the rows the
 * batch bench writes) scored by executeRun with the scorer, the monitoring taps and the prediction log the batch
 * thread builds, on a real Redis. No HTTP, no queue, no thread: the figure a shared, busy machine moves least.
 *
 *   node --import tsx load-tests/batch-cpu.ts [repo]   (CPU_ROWS=200000, CPU_RUNS=3; TRIAGE_REDIS_URL)
 *
 * CPU_INPUT: an NDJSON file of news2 rows scored instead of the generated ones (its rows count as CPU_ROWS);
 * CPU_KEEP: a directory the last run's output and error files are copied to (to compare two checkouts' bytes).
 *
 * `repo` (default: this checkout) is the source tree whose batch code is measured: run this file against two
 * checkouts in turn to compare them. Each run is scored anew (its own run record and output folder); the first is a
 * warm-up. Prints per run wall time, rows/s and CPU µs per row (process CPU: the run's JavaScript, onnxruntime's
 * threads, ioredis), then `BATCH_CPU {…}` with the runs after the first.
 */
import { once } from 'node:events';
import { copyFileSync, createWriteStream, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

const repo = path.resolve(process.argv[2] ?? path.join(import.meta.dirname, '..'));
const ROWS = Number(process.env.CPU_ROWS ?? 200_000);
const RUNS = Number(process.env.CPU_RUNS ?? 3);
const redisUrl = process.env.TRIAGE_REDIS_URL || 'redis://127.0.0.1:6379';
const from = (file: string) => import(path.join(repo, file));

const { executeRun } = await from('src/batch/execute.ts');
const { RunStore } = await from('src/batch/runs.ts');
const { LocalStorage } = await from('src/batch/storage.ts');
const { MonitoringRecorder } = await from('src/monitoring/recorder.ts');
const { PredictionLog } = await from('src/outcomes/prediction-log.ts');
const { KeySpace } = await from('src/platform/keyspace.ts');
const { newRedis } = await from('src/platform/redis.ts');
const { loadModels } = await from('src/registry/load.ts');
const { createRuntimeFactory } = await from('src/runtime/factory.ts');
const { ModelCatalog } = await from('src/serving/catalog.ts');
const { JobRunners } = await from('src/serving/runners.ts');
const { Scorer } = await from('src/serving/scorer.ts');

interface Feature {
  name: string;
  type: 'number' | 'integer' | 'boolean' | 'enum';
  min: number;
  max: number;
  required: boolean;
  default?: unknown;
  values: string[];
}

/** mulberry32, seeded as the batch bench seeds it */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The batch bench's rows (load-tests/bench/batch.ts writeRows). */
async function writeRows(file: string, features: readonly Feature[], rows: number): Promise<void> {
  const random = prng(42);
  const out = createWriteStream(file);
  let buffer = '';
  for (let i = 0; i < rows; i++) {
    const row: Record<string, unknown> = { id: `row-${i}` };
    for (const f of features) {
      if (!f.required && f.default !== undefined && random() < 0.5) continue;
      if (f.type === 'integer') row[f.name] = f.min + Math.floor(random() * (f.max - f.min + 1));
      else if (f.type === 'number') row[f.name] = Math.round((f.min + random() * (f.max - f.min)) * 10) / 10;
      else if (f.type === 'boolean') row[f.name] = random() < 0.2;
      else row[f.name] = random() < 0.8 ? f.values[0] : f.values[Math.floor(random() * f.values.length)];
    }
    buffer += `${JSON.stringify(row)}\n`;
    if (buffer.length > 1 << 20) {
      if (!out.write(buffer)) await once(out, 'drain');
      buffer = '';
    }
  }
  out.end(buffer);
  await once(out, 'finish');
}

const prefix = `{triage-batch-cpu-${process.pid}}`;
const model = (await loadModels(path.join(repo, 'models'), 60_000)).find(
  (m: { manifest: { name: string } }) => m.manifest.name === 'news2',
);
const name = model.manifest.name as string;
const dataDir = mkdtempSync(path.join(tmpdir(), 'triage-batch-cpu-'));
const input = 'clients/cpu/input.ndjson';
mkdirSync(path.join(dataDir, 'clients', 'cpu'), { recursive: true });
if (process.env.CPU_INPUT) copyFileSync(process.env.CPU_INPUT, path.join(dataDir, input));
else await writeRows(path.join(dataDir, input), model.manifest.features, ROWS);

const redis = newRedis(redisUrl, { maxRetriesPerRequest: 3 });
const factory = createRuntimeFactory({ onnxThreads: 1, caller: 'job' });
const runners = new JobRunners(factory, 'batch');
const results: Array<{ ms: number; rowsPerSec: number; cpuUsPerRow: number }> = [];
try {
  for (let i = 0; i < RUNS; i++) {
    const runs = new RunStore(redis, new KeySpace(prefix, [name]));
    const id = runs.newId(name);
    await runs.create({
      id,
      model: name,
      version: model.manifest.routing.primary,
      requestedBy: 'api:cpu',
      input: { path: input, format: 'ndjson' },
      asOf: Date.now(),
      state: 'running',
      createdAt: Date.now(),
    });
    const run = await runs.get(id);
    const catalog = ModelCatalog.fixed([model], {}, { redis, prefix });
    await catalog.refresh();
    const keys = new KeySpace(prefix);
    const recorder = new MonitoringRecorder({ redis, keys });
    const predictionLog = new PredictionLog({ redis, keys, maxBufferedRows: 1000 });
    const scorer = new Scorer({ catalog, runners, observers: [{ onScore: () => undefined }, recorder, predictionLog] });
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const outcome = await executeRun({
      run,
      model: catalog.get(name),
      scorer,
      storage: new LocalStorage(dataDir),
      runs,
      chunkTimeoutMs: 60_000,
    });
    await recorder.close();
    await predictionLog.close();
    const ms = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    catalog.close();
    if (process.env.CPU_KEEP) {
      mkdirSync(process.env.CPU_KEEP, { recursive: true });
      for (const file of ['output.ndjson', 'errors.ndjson']) {
        copyFileSync(path.join(dataDir, run.dir, file), path.join(process.env.CPU_KEEP, file));
      }
    }
    const r = { ms, rowsPerSec: (ROWS * 1000) / ms, cpuUsPerRow: (cpu.user + cpu.system) / ROWS };
    if (i > 0) results.push(r);
    console.log(
      `run ${i + 1}${i === 0 ? ' (warm-up)' : ''}: ${outcome}, ${ROWS} rows in ${(ms / 1000).toFixed(2)} s = ` +
        `${r.rowsPerSec.toFixed(0)} rows/s, ${r.cpuUsPerRow.toFixed(2)} µs CPU per row`,
    );
  }
  const mean = (pick: (r: (typeof results)[number]) => number) =>
    results.reduce((a, r) => a + pick(r), 0) / Math.max(1, results.length);
  console.log(
    `BATCH_CPU ${JSON.stringify({ repo, rows: ROWS, runs: results.length, rowsPerSec: mean((r) => r.rowsPerSec), cpuUsPerRow: mean((r) => r.cpuUsPerRow) })}`,
  );
} finally {
  await runners.close();
  await factory.close();
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix.slice(0, -1)}*`, 'COUNT', 1000);
    cursor = next;
    if (found.length > 0) await redis.del(...found);
  } while (cursor !== '0');
  redis.disconnect();
  rmSync(dataDir, { recursive: true, force: true });
}
