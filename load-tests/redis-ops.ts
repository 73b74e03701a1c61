/**
 * Redis operations per unit of work, measured on a real local Redis Cluster (three primaries, three replicas) with
 * `INFO commandstats`: a real gateway (HTTP on a socket, in-process workers, the bundled models) is driven through
 * each kind of work in turn; before each phase the stats of every node are reset (CONFIG RESETSTAT), after it the
 * primaries' calls are summed and divided by the units done. An idle phase of the same length measures the
 * background (BullMQ's blocking waits, stalled-job checks, routing refreshes) that every phase also contains; it is
 * subtracted from each phase. Commands run inside Lua scripts (ours and BullMQ's) count as commands, as they cost
 * as such; the primaries' CPU time (INFO cpu) per unit is printed beside them.
 *
 *   node --import tsx load-tests/redis-ops.ts            (N=200 by default: REDIS_OPS_N; REDIS_OPS_TOP commands listed per phase, 8)
 *
 * The capacity model in k8s/README.md is built from its output.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { serve } from '@hono/node-server';
import { Redis } from 'ioredis';
import { LocalCluster } from '../src/devtools/local-cluster.ts';
import { composeGateway } from '../src/gateway.ts';
import { loadConfig } from '../src/platform/config.ts';
import { createLogger } from '../src/platform/logger.ts';
import { loadModels } from '../src/registry/load.ts';
import { NEWS2_INSTANCE } from '../test/support/data.ts';
import { makeKeys } from '../test/support/keys.ts';
import { Receiver } from '../test/support/receiver.ts';

const N = Number(process.env.REDIS_OPS_N ?? 200);
/** how many commands each phase lists (REDIS_OPS_TOP) */
const TOP = Number(process.env.REDIS_OPS_TOP ?? 8);
const REPO = path.resolve(import.meta.dirname, '..');
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function onNodes<T>(ports: number[], fn: (r: Redis) => Promise<T>): Promise<T[]> {
  return Promise.all(
    ports.map(async (port) => {
      const r = new Redis({ port, host: '127.0.0.1' });
      try {
        return await fn(r);
      } finally {
        r.disconnect();
      }
    }),
  );
}

/** calls per command, summed over the primaries */
function parseCommandStats(infos: string[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const info of infos) {
    for (const m of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
      out.set(m[1] as string, (out.get(m[1] as string) ?? 0) + Number(m[2]));
    }
  }
  return out;
}

async function main() {
  const cluster = await LocalCluster.start();
  const keys = makeKeys();
  const receiver = await Receiver.start(keys.secrets.client);
  const dataDir = await mkdtemp(path.join(tmpdir(), 'triage-redis-ops-'));
  const inputs = path.join(dataDir, 'clients', 'client', 'inputs');
  await mkdir(inputs, { recursive: true });
  const models = await loadModels(path.join(REPO, 'models'), 5000);
  for (const m of models) if (m.manifest.sync) m.manifest.sync.latencyBudgetMs = 2000;
  const gateway = await composeGateway({
    config: {
      ...loadConfig({}),
      workers: ['inference', 'callbacks', 'batch'],
      warmupRuns: 3,
      warmupPolicy: 'warn',
      dataDir,
      callbacks: { attempts: 3, backoffMs: 50, timeoutMs: 2000, httpHosts: ['127.0.0.1'] },
      maintenanceIntervalMs: 3_600_000,
    },
    logger: createLogger(process.env.REDIS_OPS_DEBUG ? 'info' : 'silent'),
    redisUrl: cluster.url,
    keys: keys.store,
    models,
  });
  const server = serve({ fetch: gateway.app.fetch, hostname: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const call = async (method: string, url: string, key: string, body?: unknown) => {
    const res = await fetch(`${base}${url}`, {
      method,
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
    return { status: res.status, body: (await res.json().catch(() => ({}))) as Record<string, unknown> };
  };
  const until = async (what: string, check: () => Promise<boolean>) => {
    const started = performance.now();
    while (!(await check())) {
      if (performance.now() - started > 120_000) throw new Error(`timed out: ${what}`);
      await sleep(20);
    }
  };
  const primaries = async () =>
    (await cluster.topology()).filter((t) => t.role === 'master' && !t.failed).map((t) => t.port);
  const reset = async () => onNodes(await primaries(), (r) => r.config('RESETSTAT'));
  const read = async () => parseCommandStats(await onNodes(await primaries(), (r) => r.info('commandstats')));
  /** CPU seconds the primaries' processes have used (user + system): the cost of commands, networking included */
  const cpu = async () =>
    (await onNodes(await primaries(), (r) => r.info('cpu')))
      .map((info) => {
        const get = (k: string) => Number(new RegExp(`^${k}:([0-9.]+)`, 'm').exec(info)?.[1] ?? 0);
        return get('used_cpu_user') + get('used_cpu_sys');
      })
      .reduce((a, b) => a + b, 0);
  // the background's rate: the same connections, no work
  const results: Array<{ phase: string; units: number; ms: number; stats: Map<string, number>; cpuS: number }> = [];
  const phase = async (name: string, units: number, run: () => Promise<void>) => {
    // monitoring and shadow aggregates flush each second: a phase ends after the flush of its last unit
    await reset();
    const cpuBefore = await cpu();
    const started = performance.now();
    await run();
    await sleep(1500);
    const ms = performance.now() - started;
    results.push({ phase: name, units, ms, stats: await read(), cpuS: (await cpu()) - cpuBefore });
  };

  const news2 = NEWS2_INSTANCE;
  // warm: every path once, so one-off work (script loading, queue metadata) is not counted
  await call('POST', '/v1/models/news2/predict', keys.client, { instances: [news2] });

  await phase('idle', 1, async () => {
    await sleep(3000);
  });
  await phase('sync predict (news2)', N, async () => {
    for (let i = 0; i < N; i++) {
      const r = await call('POST', '/v1/models/news2/predict', keys.client, { instances: [news2] });
      if (r.status !== 200) throw new Error(`predict: ${r.status} ${JSON.stringify(r.body)}`);
    }
  });
  // the bench's async path (load-tests/bench/async.ts): a sync model's job through Prefer: respond-async, no hold
  await phase('async job, submitted → released (news2, no hold)', N, async () => {
    const ids: string[] = [];
    for (let i = 0; i < N; i++) {
      const r = await fetch(`${base}/v1/models/news2/predict`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${keys.client}`,
          'content-type': 'application/json',
          prefer: 'respond-async',
        },
        body: JSON.stringify({ instances: [news2] }),
      });
      const body = (await r.json()) as { id?: string };
      if (r.status !== 202 || !body.id) throw new Error(`submit: ${r.status} ${JSON.stringify(body)}`);
      ids.push(body.id);
    }
    // one poll of the jobs' states every 250 ms, as above: the last job released means all were (one worker, FIFO)
    await until('every job released', async () => {
      await sleep(250);
      return (await call('GET', `/v1/jobs/${ids[ids.length - 1]}`, keys.client)).body.state === 'released';
    });
  });
  const held: string[] = [];
  await phase('async job, submitted → held (note-triage)', N, async () => {
    for (let i = 0; i < N; i++) {
      const r = await call('POST', '/v1/models/note-triage/jobs', keys.client, {
        input: { text: 'Patient reports chest pain radiating to the left arm since this morning.' },
        callbackUrl: receiver.url('/ops'),
      });
      if (r.status !== 202) throw new Error(`submit: ${r.status} ${JSON.stringify(r.body)}`);
      held.push(String(r.body.id));
    }
    // one poll of the queue's size every 250 ms (its few calls are counted too; polling each job would swamp them)
    await until('every job held', async () => {
      await sleep(250);
      return (await call('GET', '/v1/reviews?model=note-triage&limit=1', keys.reviewer)).body.total === N;
    });
  });
  await phase('review decision → released → callback', N, async () => {
    for (const id of held) {
      const r = await call('POST', `/v1/reviews/${id}/decision`, keys.reviewer, { decision: 'approve', reason: 'ok' });
      if (r.status !== 200) throw new Error(`decide: ${r.status} ${JSON.stringify(r.body)}`);
    }
    await until('every callback delivered', async () => held.every((id) => receiver.events.has(`evt-${id}-released`)));
  });
  // the sample discharges twenty times over: several chunks (the manifest's chunkSize rows each)
  const sample = await readFile(path.join(REPO, 'models', 'readmission', 'sample-discharges.ndjson'), 'utf8');
  await writeFile(path.join(inputs, 'discharges.ndjson'), sample.repeat(20));
  const rows = sample.trim().split('\n').length * 20;
  const chunkSize = models.find((m) => m.manifest.name === 'readmission')?.manifest.batch?.chunkSize ?? 1024;
  const chunks = Math.ceil(rows / chunkSize);
  await phase(`batch run (readmission, ${rows} rows)`, chunks, async () => {
    const r = await call('POST', '/v1/models/readmission/batches', keys.client, {
      input: { path: 'inputs/discharges.ndjson', format: 'ndjson' },
    });
    if (r.status !== 202) throw new Error(`batch: ${r.status} ${JSON.stringify(r.body)}`);
    await until('the run to complete', async () => {
      const run = await call('GET', `/v1/batches/${r.body.id}`, keys.client);
      if (run.body.state === 'failed') throw new Error(`batch run failed: ${JSON.stringify(run.body)}`);
      return run.status === 200; // the Bulk Data manifest, once completed
    });
  });

  const idle = results.find((r) => r.phase === 'idle') as (typeof results)[0];
  const idleRate = [...idle.stats.values()].reduce((a, b) => a + b, 0) / idle.ms;
  const idleCpu = idle.cpuS / idle.ms;
  console.log(
    `Redis Cluster, 3 primaries; N=${N}; background (idle): ${(idleRate * 1000).toFixed(1)} commands/s, ` +
      `${(idleCpu * 1e6).toFixed(2)} ms CPU/s`,
  );
  console.log(
    'phase | units | commands on primaries | background | commands per unit | primary CPU ms per unit | top commands per unit',
  );
  for (const r of results.filter((x) => x.phase !== 'idle')) {
    const total = [...r.stats.values()].reduce((a, b) => a + b, 0);
    const background = idleRate * r.ms;
    const units = r.units;
    const per = Math.max(0, total - background) / units;
    const top = [...r.stats.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, TOP)
      .map(([c, n]) => `${c} ${(n / units).toFixed(2)}`)
      .join(', ');
    const unitName = r.phase.startsWith('batch') ? `${units} chunks` : String(units);
    const cpuMs = (Math.max(0, r.cpuS - idleCpu * r.ms) * 1000) / units;
    console.log(
      `${r.phase} | ${unitName} | ${total} | ${background.toFixed(0)} | ${per.toFixed(2)} | ${cpuMs.toFixed(3)} | ${top}`,
    );
  }

  if ('closeAllConnections' in server) server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await gateway.close();
  await receiver.close();
  await cluster.stop();
  await rm(dataDir, { recursive: true, force: true });
}

try {
  await main();
} catch (err) {
  console.error(err);
  process.exitCode = 1;
} finally {
  // the cluster's servers die with this process (LocalCluster's exit hook); nothing else keeps it alive
  process.exit();
}
