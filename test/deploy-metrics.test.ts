/**
 * What Prometheus and the kubelet read, checked by their real consumers: the gateway's and a worker process's
 * /metrics through `promtool check metrics` (Debian's prometheus package; .ci/run installs it), with the stock
 * Node.js process metrics under their stock names; and a worker process's /healthz, which must fail when Redis is
 * gone or a worker has stopped (it is the liveness probe of the worker pods).
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { ensureRedis, type RedisHandle } from '../src/devtools/local-redis.ts';
import { hashKey } from '../src/platform/auth.ts';
import { loadConfig } from '../src/platform/config.ts';
import { type RunningGateway, startGateway } from '../src/server.ts';
import { CALLBACK_QUEUE } from '../workers/callbacks.ts';
import { INFERENCE_QUEUE } from '../workers/inference.ts';
import { workerHealth } from '../workers/ops.ts';
import {
  captureLogs,
  deletePrefix,
  generousModels,
  MODELS_DIR,
  REDIS_URL,
  removeDir,
  waitFor,
} from './support/index.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const KEY = `trg_metrics_${Date.now().toString(36)}_0123456789`;

/** The series a stock Node.js dashboard (prom-client's default metrics) queries, by their stock names. */
const STOCK_SERIES = [
  'process_cpu_user_seconds_total',
  'process_cpu_system_seconds_total',
  'process_resident_memory_bytes',
  'process_start_time_seconds',
  'nodejs_eventloop_lag_seconds',
  'nodejs_eventloop_lag_p99_seconds',
  'nodejs_heap_size_used_bytes',
  'nodejs_heap_size_total_bytes',
  'nodejs_external_memory_bytes',
  'nodejs_version_info',
];

function promtool(exposition: string): { status: number | null; output: string } {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: exposition, encoding: 'utf8', timeout: 30_000 });
  assert.ok(
    !r.error,
    `promtool is not on PATH (${r.error?.message}): install Debian's prometheus package (.ci/run does it)`,
  );
  return { status: r.status, output: `${r.stdout}${r.stderr}`.trim() };
}

/** promtool clean, the stock process series present, none of them prefixed. */
function assertLintClean(exposition: string, what: string) {
  // promtool passes an empty input: make sure there is something to lint
  assert.ok(exposition.split('\n').filter((l) => l.startsWith('# TYPE ')).length > 20, `${what}: a full exposition`);
  const { status, output } = promtool(exposition);
  assert.equal(output, '', `${what}: promtool check metrics says:\n${output}`);
  assert.equal(status, 0);
  for (const name of STOCK_SERIES) {
    assert.match(exposition, new RegExp(`^# TYPE ${name} `, 'm'), `${what}: ${name}, as stock dashboards name it`);
  }
  assert.doesNotMatch(exposition, /^# TYPE triage_process_/m, `${what}: no prefixed copies of the process metrics`);
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** The first value `fn` gives (a failure counts as none yet), polled with the shared waitFor. */
async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  let value: T | undefined;
  await waitFor(
    async () => {
      value = await fn().catch(() => undefined);
      return value !== undefined;
    },
    what,
    timeoutMs,
    100,
  );
  return value as T;
}

describe('the gateway’s /metrics, read by promtool', () => {
  const prefix = `{triage-metrics-${process.pid}}`;
  let gateway: RunningGateway;
  /** the bundled models with generous budgets: this test reads /metrics, it is not about deadlines */
  let modelsDir: string;
  before(async () => {
    modelsDir = await generousModels();
    const config = loadConfig({
      TRIAGE_ENV: 'production',
      TRIAGE_API_KEYS: `keys:\n  - id: metrics\n    role: client\n    sha256: ${hashKey(KEY)}\n`,
      TRIAGE_HOST: '127.0.0.1',
      TRIAGE_PORT: '0',
      TRIAGE_REDIS_URL: REDIS_URL,
      TRIAGE_REDIS_PREFIX: prefix,
      TRIAGE_MODELS_DIR: modelsDir,
      TRIAGE_WARMUP_RUNS: '5',
      // the in-process workers too: their job, callback and batch series are on this /metrics as well
      TRIAGE_WORKERS: 'all',
      TRIAGE_SHUTDOWN_GRACE_MS: '1000',
    });
    gateway = await startGateway(config, captureLogs('warn').logger);
  });
  after(async () => {
    await gateway?.shutdown();
    await deletePrefix(prefix);
    await removeDir(modelsDir);
  });

  it('is promtool-clean with labelled series in it, and carries the stock Node.js process metrics', async () => {
    for (const body of [
      { instances: [{ respirationRate: 22, spo2: 93, onOxygen: true, systolicBP: 105, pulse: 115 }] },
      { instances: 'not a list' },
    ]) {
      const res = await fetch(`${gateway.url}/v1/models/news2/predict`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
        body: JSON.stringify(body),
      });
      await res.arrayBuffer();
    }
    const exposition = await (await fetch(`${gateway.url}/metrics`)).text();
    assert.match(exposition, /triage_http_request_duration_seconds_bucket\{[^}]*model="news2"/);
    assertLintClean(exposition, 'gateway');
  });
});

describe('a worker process: /metrics read by promtool, /healthz as the kubelet probes it', () => {
  let redis: RedisHandle;
  let child: ChildProcess;
  let port: number;
  let logs = '';
  before(async () => {
    // a Redis of its own, so the test can take it away
    redis = await ensureRedis(undefined, { defaultPort: await freePort() });
    port = await freePort();
    child = spawn(process.execPath, ['--import', 'tsx', 'workers/main.ts', 'inference,callbacks'], {
      cwd: ROOT,
      env: {
        PATH: process.env.PATH ?? '',
        TSX_DISABLE_CACHE: '1',
        TRIAGE_ENV: 'production',
        TRIAGE_API_KEYS: `keys:\n  - id: metrics\n    role: client\n    sha256: ${hashKey(KEY)}\n`,
        TRIAGE_HOST: '127.0.0.1',
        TRIAGE_REDIS_URL: redis.url,
        TRIAGE_MODELS_DIR: MODELS_DIR,
        TRIAGE_WORKER_METRICS_PORT: String(port),
        TRIAGE_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout?.on('data', (d) => {
      logs += d;
    });
    child.stderr?.on('data', (d) => {
      logs += d;
    });
  });
  after(async () => {
    if (child.exitCode === null) {
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
    await redis?.stop();
  });

  const healthz = async () => {
    const res = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(5000) });
    return { status: res.status, body: (await res.json()) as { redis: string; workers: Record<string, string> } };
  };

  it('/healthz is 200 once its workers run and Redis answers; /metrics is promtool-clean', async () => {
    const ok = await until(`worker /healthz (logs:\n${logs})`, async () => {
      const h = await healthz();
      return h.status === 200 ? h : undefined;
    });
    assert.deepEqual(ok.body.workers, { [INFERENCE_QUEUE]: 'running', [CALLBACK_QUEUE]: 'running' });
    assert.equal(ok.body.redis, 'ok');
    assertLintClean(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(), 'worker');
  });

  it('/healthz is 503 while Redis is unreachable, and answers in time (not stuck on the retrying connection)', async () => {
    await redis.stop();
    const down = await until('a 503 from /healthz', async () => {
      const h = await healthz();
      return h.status === 503 ? h : undefined;
    });
    assert.equal(down.body.redis, 'unreachable');
  });
});

describe('workerHealth', () => {
  it('reports a stopped BullMQ worker (and a healthy one) by its queue name', async () => {
    const connection = new Redis(REDIS_URL, { maxRetriesPerRequest: null });
    const prefix = `{triage-health-${process.pid}}`;
    const a = new Worker('health-a', async () => undefined, { connection, prefix });
    const b = new Worker('health-b', async () => undefined, { connection, prefix });
    try {
      await Promise.all([a.waitUntilReady(), b.waitUntilReady()]);
      await until('workers running', async () => (a.isRunning() && b.isRunning() ? true : undefined));
      assert.deepEqual(await workerHealth(connection, [a, b]), {
        ok: true,
        redis: 'ok',
        workers: { 'health-a': 'running', 'health-b': 'running' },
      });
      await b.close();
      const report = await workerHealth(connection, [a, b]);
      assert.equal(report.ok, false);
      assert.deepEqual(report.workers, { 'health-a': 'running', 'health-b': 'stopped' });
    } finally {
      await a.close();
      await b.close();
      await deletePrefix(prefix);
      await connection.quit();
    }
  });
});
