import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { writeRows } from './bench/rows.ts';

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
