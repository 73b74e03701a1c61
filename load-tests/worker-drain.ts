/**
 * The inference worker alone, without HTTP load beside it: N news2 jobs are submitted through the app (no worker
 * running), then the in-process inference worker is started and timed until every job is released. What the async
 * bench's "workers alone" figure estimates from its tail, measured on its own.
 *
 *   node --import tsx load-tests/worker-drain.ts [repo]     (DRAIN_N=1000, DRAIN_CONCURRENCY=4; TRIAGE_REDIS_URL)
 *
 * `repo` (default: this checkout) is the source tree whose gateway and worker are measured: run this file against
 * two checkouts in turn to compare them on the same machine. The pressure threshold and Redis command timeout are
 * set so that a busy machine neither pauses the worker nor turns slow answers into errors.
 */
import path from 'node:path';
import { Redis } from 'ioredis';

const repo = path.resolve(process.argv[2] ?? path.join(import.meta.dirname, '..'));
const N = Number(process.env.DRAIN_N ?? 1000);
const concurrency = Number(process.env.DRAIN_CONCURRENCY ?? 4);
const redisUrl = process.env.TRIAGE_REDIS_URL || 'redis://127.0.0.1:6379';
const from = (file: string) => import(path.join(repo, file));

const { composeGateway } = await from('src/gateway.ts');
const { loadConfig } = await from('src/platform/config.ts');
const { createLogger } = await from('src/platform/logger.ts');
const { loadModels } = await from('src/registry/load.ts');
const { KeySpace } = await from('src/platform/keyspace.ts');
const { startWorkers } = await from('workers/index.ts');
const { makeKeys } = await from('test/support/keys.ts');
const { NEWS2_INSTANCE } = await from('test/support/data.ts');

interface Loaded {
  manifest: { name: string; sync?: { latencyBudgetMs: number } };
}
const prefix = `{triage-drain-${process.pid}}`;
const keys = makeKeys();
const models = ((await loadModels(path.join(repo, 'models'), 5000)) as Loaded[]).filter(
  (m) => m.manifest.name === 'news2',
);
for (const m of models) if (m.manifest.sync) m.manifest.sync.latencyBudgetMs = 5000;
const gateway = await composeGateway({
  config: {
    ...loadConfig({}),
    workers: [],
    redisPrefix: prefix,
    warmupRuns: 1,
    warmupPolicy: 'warn',
    workerConcurrency: concurrency,
    pressureThresholdMs: 10_000,
    redisCommandTimeoutMs: 5000,
  },
  logger: createLogger('silent'),
  redisUrl,
  keys: keys.store,
  models,
});
const redis = new Redis(redisUrl);
try {
  const body = JSON.stringify({ instances: [NEWS2_INSTANCE] });
  const headers = {
    authorization: `Bearer ${keys.client}`,
    'content-type': 'application/json',
    prefer: 'respond-async',
  };
  const ids: string[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: 16 }, async () => {
      while (next < N) {
        next++;
        const r = await gateway.app.request('/v1/models/news2/predict', { method: 'POST', body, headers });
        if (r.status !== 202) throw new Error(`submit answered ${r.status}: ${await r.text()}`);
        ids.push(((await r.json()) as { id: string }).id);
      }
    }),
  );
  const shard = new KeySpace(prefix).shard('news2');
  // the last job first (one read a poll), then all of them
  const released = async () => {
    if ((await redis.hget(`${shard}:job:${ids[ids.length - 1]}`, 'state')) !== 'released') return false;
    const states = (await redis.pipeline(ids.map((id) => ['hget', `${shard}:job:${id}`, 'state'])).exec()) ?? [];
    return states.every(([, state]) => state === 'released');
  };
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const workers = startWorkers(['inference'], gateway.services);
  const deadline = Date.now() + 300_000;
  while (!(await released())) {
    if (Date.now() > deadline) throw new Error('the jobs were not all released within 5 minutes');
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const ms = performance.now() - t0;
  // this process's CPU (the worker, plus the light polling above) per job: steadier than jobs/s on a shared machine
  const cpu = process.cpuUsage(cpu0);
  console.log(
    `${N} jobs, worker concurrency ${concurrency}: ${(ms / 1000).toFixed(2)} s = ${((N * 1000) / ms).toFixed(0)} jobs/s, ` +
      `${((cpu.user + cpu.system) / 1000 / N).toFixed(3)} ms CPU per job`,
  );
  await workers.close();
} finally {
  await gateway.close();
  for (const pattern of new KeySpace(prefix, ['news2']).patterns()) {
    let cursor = '0';
    do {
      const [nextCursor, found] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = nextCursor;
      if (found.length > 0) await redis.del(...found);
    } while (cursor !== '0');
  }
  redis.disconnect();
}
process.exit(0);
