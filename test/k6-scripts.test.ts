/**
 * The k6 scripts without k6 (CI cannot install it). Each script is evaluated as the ES module it is, with stand-ins
 * for the k6 modules: its `options` must declare scenarios k6 accepts and thresholds that parse, on metrics that
 * exist, filtered by tags that exist (models, scenarios). Then its functions run, as k6 would call them, against a
 * real gateway (a child process with Redis, workers and the bundled models): the stand-in `k6/http` makes real,
 * synchronous requests (a worker thread does the fetch while the caller waits on an Atomics cell), so an async job is
 * really submitted, held, approved, released and called back to the real callback receiver, and a batch run really
 * scores a file. Every k6 check must pass.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { MessageChannel, receiveMessageOnPort, Worker } from 'node:worker_threads';
import { Parser } from 'acorn';
import YAML from 'yaml';
import { hashKey } from '../src/platform/auth.ts';
import { deletePrefix, generousModels, removeDir, waitFor } from './support/index.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const K6_DIR = path.join(ROOT, 'load-tests/k6');
const REDIS_URL = process.env.TRIAGE_REDIS_URL || 'redis://127.0.0.1:6379';
const SCRIPTS = ['sync.js', 'async.js', 'mixed.js', 'overload.js'];

// ---- k6 stand-ins ----------------------------------------------------------------------------------------------------

interface K6Response {
  status: number;
  body: string;
  headers: Record<string, string>;
  error?: string;
}

interface K6State {
  request: (method: string, url: string, body: string | undefined, headers: Record<string, string>) => K6Response;
  metrics: Map<string, { type: string; samples: unknown[] }>;
  checks: Array<{ name: string; ok: boolean }>;
  iteration: number;
}

declare global {
  // biome-ignore lint/suspicious/noExplicitAny: k6 globals
  var __ENV: Record<string, any>;
  var __k6: K6State;
}

const STUBS: Record<string, string> = {
  'k6.mjs': `
    const s = () => globalThis.__k6;
    export function check(value, sets) {
      let all = true;
      for (const [name, fn] of Object.entries(sets)) {
        let ok = false;
        try { ok = !!fn(value); } catch { ok = false; }
        s().checks.push({ name, ok });
        if (!ok) all = false;
      }
      return all;
    }
    // k6's sleep really waits (a poll loop without it would hammer the gateway into its rate limits on a slow machine)
    const pause = new Int32Array(new SharedArrayBuffer(4));
    export function sleep(seconds) { Atomics.wait(pause, 0, 0, Math.max(0, seconds * 1000)); }
    export function fail(message) { throw new Error('k6 fail: ' + message); }
    export function group(_name, fn) { return fn(); }
    export default { check, sleep, fail, group };`,
  'http.mjs': `
    const s = () => globalThis.__k6;
    function get(obj, path) {
      if (!path) return obj;
      let cur = obj;
      for (const part of String(path).split('.')) {
        if (cur === null || cur === undefined) return undefined;
        if (part === '#' && Array.isArray(cur)) return cur.length;
        cur = cur[part];
      }
      return cur;
    }
    function canonical(name) { return name.split('-').map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join('-'); }
    function request(method, url, body, params) {
      const headers = (params && params.headers) || {};
      const r = s().request(method, url, body, headers);
      const h = {};
      for (const [k, v] of Object.entries(r.headers)) h[canonical(k)] = v;
      return { status: r.status, body: r.body, headers: h, error: r.error || '',
        json(path) { return get(JSON.parse(r.body), path); } };
    }
    const http = {
      get: (url, params) => request('GET', url, undefined, params),
      post: (url, body, params) => request('POST', url, body, params),
      put: (url, body, params) => request('PUT', url, body, params),
      del: (url, body, params) => request('DELETE', url, body, params),
      request: (method, url, body, params) => request(method, url, body, params),
      expectedStatuses: (...statuses) => ({ expectedStatuses: statuses }),
      setResponseCallback: () => {},
    };
    export default http;`,
  'metrics.mjs': `
    const s = () => globalThis.__k6;
    class Metric {
      constructor(type, name) {
        if (!/^[A-Za-z0-9_]{1,128}$/.test(name)) throw new Error('k6: invalid metric name ' + name);
        if (s().metrics.has(name)) throw new Error('k6: metric ' + name + ' declared twice');
        this.name = name;
        s().metrics.set(name, { type, samples: [] });
      }
      add(value) { s().metrics.get(this.name).samples.push(value); }
    }
    export class Trend extends Metric { constructor(name) { super('trend', name); } }
    export class Rate extends Metric { constructor(name) { super('rate', name); } }
    export class Counter extends Metric { constructor(name) { super('counter', name); } }
    export class Gauge extends Metric { constructor(name) { super('gauge', name); } }`,
  'execution.mjs': `
    const s = () => globalThis.__k6;
    export default {
      scenario: { get iterationInTest() { return s().iteration++; }, name: 'test' },
      vu: { idInTest: 1, iterationInScenario: 0 },
    };`,
};

const K6_MODULES: Record<string, string> = {
  k6: 'k6.mjs',
  'k6/http': 'http.mjs',
  'k6/metrics': 'metrics.mjs',
  'k6/execution': 'execution.mjs',
};

/** The k6 built-in metrics and their types. */
const BUILTIN_METRICS: Record<string, string> = {
  checks: 'rate',
  data_received: 'counter',
  data_sent: 'counter',
  dropped_iterations: 'counter',
  http_req_blocked: 'trend',
  http_req_connecting: 'trend',
  http_req_duration: 'trend',
  http_req_failed: 'rate',
  http_req_receiving: 'trend',
  http_req_sending: 'trend',
  http_req_tls_handshaking: 'trend',
  http_req_waiting: 'trend',
  http_reqs: 'counter',
  iteration_duration: 'trend',
  iterations: 'counter',
  vus: 'gauge',
  vus_max: 'gauge',
};

const AGGREGATIONS: Record<string, RegExp> = {
  trend: /^(avg|min|max|med|p\(\d{1,2}(\.\d+)?\))$/,
  rate: /^rate$/,
  counter: /^(count|rate)$/,
  gauge: /^value$/,
};

const EXECUTORS: Record<string, string[]> = {
  'constant-arrival-rate': ['rate', 'duration', 'preAllocatedVUs'],
  'ramping-arrival-rate': ['stages', 'preAllocatedVUs'],
  'per-vu-iterations': [],
  'shared-iterations': [],
  'constant-vus': ['duration'],
  'ramping-vus': ['stages'],
  'externally-controlled': ['duration'],
};

const DURATION = /^(\d+(\.\d+)?(ms|s|m|h))+$/;

let evaluations = 0;

/** Evaluates a k6 script with the stand-ins: a fresh copy each time, so its init code runs again with this __ENV. */
async function loadScript(
  script: string,
  env: Record<string, string>,
  state: K6State,
): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(path.join(tmpdir(), `triage-k6-${evaluations++}-`));
  mkdirSync(path.join(dir, '__k6'));
  for (const [file, source] of Object.entries(STUBS)) writeFileSync(path.join(dir, '__k6', file), source);
  writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}');
  for (const file of readdirSync(K6_DIR).filter((f) => f.endsWith('.js'))) {
    const source = readFileSync(path.join(K6_DIR, file), 'utf8').replace(
      /from\s+'(k6(?:\/[a-z]+)?)'/g,
      (_whole, mod: string) => {
        const stub = K6_MODULES[mod];
        assert.ok(stub, `${file}: imports ${mod}, which the stand-ins do not provide`);
        return `from './__k6/${stub}'`;
      },
    );
    assert.doesNotMatch(source, /from\s+'(?!\.\/)/, `${file}: imports only k6 modules and local files`);
    writeFileSync(path.join(dir, file), source);
  }
  globalThis.__ENV = env;
  globalThis.__k6 = state;
  try {
    return (await import(pathToFileURL(path.join(dir, script)).href)) as Record<string, unknown>;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function newState(request: K6State['request'] = () => ({ status: 0, body: '', headers: {} })): K6State {
  return { request, metrics: new Map(), checks: [], iteration: 0 };
}

type Options = {
  scenarios: Record<string, Record<string, unknown>>;
  thresholds: Record<string, Array<string | { threshold: string }>>;
  summaryTrendStats?: string[];
};

/**
 * What k6 0.46 parses. Until 0.53 k6 ran every ES module through its bundled Babel 6, whose parser knows ES2017 and
 * nothing later: optional chaining, ??, object rest/spread, optional catch binding, numeric separators, class fields
 * are syntax errors there (and the script fails to load). acorn at ecmaVersion 2017 refuses the same.
 */
const K6_046_ECMA_VERSION = 2017;

function parseForK6(source: string, file: string) {
  try {
    Parser.parse(source, { ecmaVersion: K6_046_ECMA_VERSION, sourceType: 'module', locations: true });
  } catch (err) {
    assert.fail(`${file}: k6 0.46 cannot parse it: ${(err as Error).message} (ES2017 at most, see lib.js)`);
  }
}

/** k6 duration → seconds (the scripts' own conversion is checked against this). */
function durationSeconds(d: string): number {
  const unit: Record<string, number> = { ms: 0.001, s: 1, m: 60, h: 3600 };
  return [...d.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)].reduce(
    (t, m) => t + Number(m[1]) * (unit[m[2] as string] ?? 0),
    0,
  );
}

// ---- the static checks ---------------------------------------------------------------------------------------------

const MODELS = readdirSync(path.join(ROOT, 'models'), { withFileTypes: true })
  .filter((d) => d.isDirectory())
  .map((d) => d.name);

describe('k6 scripts: what k6 0.46 accepts', () => {
  const files = readdirSync(K6_DIR).filter((f) => f.endsWith('.js'));

  it('the check refuses the syntax k6 0.46 does not parse, and accepts what it does', () => {
    for (const late of [
      'const a = o?.b;',
      'const a = o ?? 1;',
      'const a = { ...o };',
      'const { a, ...rest } = o;',
      'try {} catch {}',
      'const a = 1_000;',
      'class A { b = 1; }',
      'a ||= 1;',
    ]) {
      assert.throws(() => parseForK6(late, 'snippet'), /k6 0\.46 cannot parse/, late);
    }
    for (const fine of [
      "import http from 'k6/http'; export default function () {}",
      'const f = async () => { await g(); };',
      'const a = [...b]; const { c, d } = e; const p = 2 ** 3;',
      'const s = tag`text`;',
      'class A { m() {} }',
    ]) {
      parseForK6(fine, 'snippet');
    }
  });

  for (const file of files) {
    it(`${file}: parses as k6 0.46 parses it (ES2017 at most)`, () => {
      parseForK6(readFileSync(path.join(K6_DIR, file), 'utf8'), file);
    });
  }

  for (const script of SCRIPTS) {
    it(`${script}: the end-of-test summary shows p99 (summaryTrendStats)`, async () => {
      const { summaryTrendStats } = (await loadScript(script, {}, newState())).options as Options;
      assert.ok(Array.isArray(summaryTrendStats), 'options.summaryTrendStats');
      assert.ok(summaryTrendStats.includes('p(99)'), 'p(99) in the summary');
      for (const stat of summaryTrendStats) {
        assert.match(stat, /^(avg|min|med|max|count|p\(\d{1,2}(\.\d+)?\))$/, `${stat}: a stat k6 knows`);
      }
    });
  }

  it('overload.js: an SRE sets the peak rate and how long it is held; recovery starts after it', async () => {
    const { scenarios } = (
      await loadScript('overload.js', { OVERLOAD_RATE: '800', DURATION: '5m', RAMP: '20s' }, newState())
    ).options as Options;
    const overload = scenarios.overload as { stages: Array<{ target: number; duration: string }> };
    assert.deepEqual(overload.stages, [
      { target: 800, duration: '20s' },
      { target: 800, duration: '5m' },
    ]);
    const recovery = scenarios.recovery as { startTime: string };
    assert.ok(durationSeconds(recovery.startTime) >= 20 + 300, `recovery starts after the peak: ${recovery.startTime}`);
    await assert.rejects(loadScript('overload.js', { DURATION: 'five minutes' }, newState()), /DURATION/);
  });

  it('mixed.js: batch runs score throughout the sync window, not once at its start', async () => {
    for (const env of [{}, { DURATION: '10m', BATCH_START: '30s' }] as Array<Record<string, string>>) {
      const { scenarios } = (await loadScript('mixed.js', env, newState())).options as Options;
      const window = (s: Record<string, unknown>) => {
        const start = durationSeconds(String(s.startTime ?? '0s'));
        return { start, end: start + durationSeconds(String(s.duration)) };
      };
      const sync = window(scenarios.news2 as Record<string, unknown>);
      const batch = scenarios.batch as Record<string, unknown>;
      assert.equal(batch.executor, 'constant-vus', 'runs back to back, for a duration');
      const b = window(batch);
      assert.ok(b.start > sync.start && b.start < sync.start + 60, 'starts once the sync traffic is steady');
      assert.ok(b.end >= sync.end - 1, `runs until the sync traffic ends (${b.end} s vs ${sync.end} s)`);
    }
  });
});

describe('k6 scripts: options', () => {
  for (const script of SCRIPTS) {
    it(`${script}: scenarios k6 accepts, each running an exported function`, async () => {
      const state = newState();
      const mod = await loadScript(script, { RECEIVER_URL: 'http://r', CALLBACK_URL: 'http://c/hook' }, state);
      const options = mod.options as Options;
      assert.ok(options && typeof options === 'object', 'exports options');
      const scenarios = Object.entries(options.scenarios ?? {});
      assert.ok(scenarios.length > 0, 'declares scenarios');
      for (const [name, s] of scenarios) {
        assert.match(name, /^[A-Za-z0-9_-]+$/);
        const required = EXECUTORS[s.executor as string];
        assert.ok(required, `${name}: executor ${s.executor}`);
        for (const field of required) assert.ok(s[field] !== undefined, `${name}: ${s.executor} needs ${field}`);
        assert.equal(typeof mod[(s.exec as string) ?? 'default'], 'function', `${name}: exec ${s.exec} is exported`);
        for (const field of ['duration', 'startTime', 'gracefulStop', 'maxDuration', 'timeUnit']) {
          if (s[field] !== undefined) assert.match(String(s[field]), DURATION, `${name}.${field}`);
        }
        for (const stage of (s.stages as Array<{ duration: string; target: number }>) ?? []) {
          assert.match(stage.duration, DURATION);
          assert.ok(Number.isFinite(stage.target));
        }
        if (s.maxVUs !== undefined) assert.ok((s.maxVUs as number) >= (s.preAllocatedVUs as number));
      }
    });

    it(`${script}: thresholds that parse, on metrics that exist, with tags that exist`, async () => {
      const envs: Array<Record<string, string>> = [{}, { RECEIVER_URL: 'http://r', CALLBACK_URL: 'http://c/hook' }];
      for (const env of envs) {
        const state = newState();
        const mod = await loadScript(script, env, state);
        const { thresholds, scenarios } = mod.options as Options;
        assert.ok(thresholds && Object.keys(thresholds).length > 0, 'declares thresholds');
        for (const [key, list] of Object.entries(thresholds)) {
          const m = /^([A-Za-z0-9_]+)(?:\{([^{}]+)\})?$/.exec(key);
          assert.ok(m, `threshold key ${key}`);
          const metric = m[1] as string;
          const type = BUILTIN_METRICS[metric] ?? state.metrics.get(metric)?.type;
          assert.ok(type, `${key}: ${metric} is neither a k6 metric nor one the script declares`);
          for (const filter of (m[2] ?? '').split(',').filter(Boolean)) {
            const [tag, value] = filter.split(':');
            assert.ok(tag && value !== undefined, `${key}: tag filter ${filter}`);
            if (tag === 'scenario') assert.ok(value in scenarios, `${key}: no scenario ${value}`);
            if (tag === 'model') assert.ok(MODELS.includes(value), `${key}: no model ${value}`);
          }
          assert.ok(Array.isArray(list) && list.length > 0);
          for (const t of list) {
            const expr = typeof t === 'string' ? t : t.threshold;
            const e = /^\s*([a-z]+(?:\(\d+(?:\.\d+)?\))?)\s*(<=|>=|===|==|!=|<|>)\s*(\d+(\.\d+)?)\s*$/.exec(expr);
            assert.ok(e, `${key}: "${expr}" is not <aggregation> <op> <number>`);
            assert.match(e[1] as string, AGGREGATIONS[type] as RegExp, `${key}: ${e[1]} does not apply to a ${type}`);
          }
        }
      }
    });
  }

  it('the SLOs: sync and mixed hold p95/p99 and errors per sync model; async has submit and release times', async () => {
    for (const script of ['sync.js', 'mixed.js']) {
      const { thresholds } = (await loadScript(script, {}, newState())).options as Options;
      for (const model of ['news2', 'deterioration']) {
        const latency = thresholds[`http_req_duration{name:predict,model:${model}}`] as string[];
        assert.ok(
          latency?.some((t) => t.startsWith('p(95)')) && latency.some((t) => t.startsWith('p(99)')),
          `${script} ${model}`,
        );
        assert.ok(thresholds[`http_req_failed{name:predict,model:${model}}`], `${script} ${model} errors`);
      }
    }
    for (const script of ['async.js', 'mixed.js']) {
      const { thresholds } = (await loadScript(script, {}, newState())).options as Options;
      assert.ok(thresholds['http_req_duration{name:submit}'], `${script}: submit latency`);
      assert.ok(thresholds.job_time_to_release, `${script}: time to release`);
    }
    const { thresholds } = (await loadScript('overload.js', {}, newState())).options as Options;
    for (const key of ['overload_shed', 'overload_shed_with_retry_after', 'recovery_ok'])
      assert.ok(thresholds[key], key);
    assert.ok(
      Object.keys(thresholds).some(
        (k) => k.startsWith('http_req_duration{scenario:overload') && k.includes('status:200'),
      ),
    );
  });

  it('the scripts read BASE_URL, CLIENT_KEY and REVIEWER_KEY from __ENV, and the README documents every variable', () => {
    const sources = readdirSync(K6_DIR)
      .filter((f) => f.endsWith('.js'))
      .map((f) => readFileSync(path.join(K6_DIR, f), 'utf8'))
      .join('\n');
    const used = new Set(
      [...sources.matchAll(/__ENV\.([A-Z_]+)|envNumber\('([A-Z_]+)'|envDuration\('([A-Z_]+)'/g)].map(
        (m) => (m[1] ?? m[2] ?? m[3]) as string,
      ),
    );
    for (const v of ['BASE_URL', 'CLIENT_KEY', 'REVIEWER_KEY']) assert.ok(used.has(v), v);
    const readme = readFileSync(path.join(K6_DIR, 'README.md'), 'utf8');
    for (const v of used) assert.ok(readme.includes(v), `load-tests/k6/README.md documents ${v}`);
  });
});

// ---- the functions, against a real gateway --------------------------------------------------------------------------

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

/** Synchronous HTTP for the k6 stand-in: a worker thread fetches while the caller blocks on an Atomics cell. */
function syncHttp(): { request: K6State['request']; close: () => Promise<number> } {
  const worker = new Worker(
    `const { parentPort } = require('node:worker_threads');
     let port;
     let cell;
     parentPort.on('message', async (message) => {
       if (message.port) {
         port = message.port;
         cell = message.cell;
         return;
       }
       const { method, url, body, headers } = message;
       let reply;
       try {
         const r = await fetch(url, { method, body, headers, redirect: 'manual', signal: AbortSignal.timeout(30000) });
         reply = { status: r.status, body: await r.text(), headers: Object.fromEntries(r.headers) };
       } catch (err) {
         reply = { status: 0, body: '', headers: {}, error: String(err) };
       }
       port.postMessage(reply);
       Atomics.store(cell, 0, 1);
       Atomics.notify(cell, 0);
     });`,
    { eval: true },
  );
  const { port1, port2 } = new MessageChannel();
  const cell = new Int32Array(new SharedArrayBuffer(4));
  worker.postMessage({ port: port2, cell }, [port2]);
  return {
    request(method, url, body, headers) {
      Atomics.store(cell, 0, 0);
      worker.postMessage({ method, url, body, headers });
      // 'not-equal': the answer came before the wait began
      assert.notEqual(Atomics.wait(cell, 0, 0, 35_000), 'timed-out', `${method} ${url}: no answer`);
      const reply = receiveMessageOnPort(port1)?.message as K6Response | undefined;
      assert.ok(reply, `${method} ${url}: no reply`);
      return reply;
    },
    close: () => worker.terminate(),
  };
}

/** Waits until `url` answers 2xx (the child still running), polled with the shared waitFor. */
async function waitUntilUp(url: string, child: ChildProcess, output: () => string): Promise<void> {
  await waitFor(
    async () => {
      assert.equal(child.exitCode, null, `exited:\n${output()}`);
      return fetch(url).then(
        (r) => r.ok,
        () => false,
      );
    },
    () => `${url} to come up:\n${output()}`,
    60_000,
    200,
  );
}

describe('k6 scripts: run against a real gateway', () => {
  const keys = {
    client: `trg_client_${randomBytes(12).toString('hex')}`,
    reviewer: `trg_reviewer_${randomBytes(12).toString('hex')}`,
  };
  const callbackSecret = `whsec_${randomBytes(24).toString('base64')}`;
  const children: ChildProcess[] = [];
  let work: string;
  let env: Record<string, string>;
  let http: ReturnType<typeof syncHttp>;
  let batchModel: string;
  let modelsDir: string;
  let logs = '';
  const prefix = `{triage-k6-${randomBytes(4).toString('hex')}}`;

  before(async () => {
    work = mkdtempSync(path.join(tmpdir(), 'triage-k6-run-'));
    const keysFile = path.join(work, 'keys.yaml');
    writeFileSync(
      keysFile,
      YAML.stringify({
        keys: [
          {
            id: 'k6-client',
            role: 'client',
            sha256: hashKey(keys.client),
            callbackHosts: ['127.0.0.1'],
            callbackSecret,
          },
          { id: 'k6-reviewer', role: 'reviewer', sha256: hashKey(keys.reviewer) },
        ],
      }),
    );
    // a batch input for the first batch-tier model, written from its manifest's feature ranges
    const batch = MODELS.map((m) => ({
      m,
      y: YAML.parse(readFileSync(path.join(ROOT, 'models', m, 'model.yaml'), 'utf8')),
    })).find((x) => x.y.tier === 'batch');
    assert.ok(batch, 'a batch-tier model in models/');
    batchModel = batch.m;
    // the k6 client's own data area: batch inputs are named relative to it
    mkdirSync(path.join(work, 'data/clients/k6-client/inputs'), { recursive: true });
    const rows = [0, 1, 2, 3, 4].map((i) =>
      Object.fromEntries(
        (batch.y.features as Array<{ name: string; type: string; min?: number; max?: number; values?: string[] }>).map(
          (f) => [
            f.name,
            f.type === 'boolean'
              ? i % 2 === 0
              : f.type === 'enum'
                ? (f.values?.[0] ?? '')
                : Math.round((f.min ?? 0) + (((f.max ?? 100) - (f.min ?? 0)) * (i + 1)) / 10),
          ],
        ),
      ),
    );
    writeFileSync(
      path.join(work, 'data/clients/k6-client/inputs/k6.ndjson'),
      `${rows.map((r) => JSON.stringify(r)).join('\n')}\n`,
    );

    // the bundled models with generous budgets: these tests check the scripts' flows, not deadlines
    modelsDir = await generousModels();
    const [gatewayPort, receiverPort] = [await freePort(), await freePort()];
    const common = { PATH: process.env.PATH ?? '', TSX_DISABLE_CACHE: '1' };
    const gateway = spawn('node', ['--import', 'tsx', 'src/server.ts'], {
      cwd: ROOT,
      env: {
        ...common,
        TRIAGE_ENV: 'production',
        TRIAGE_HOST: '127.0.0.1',
        TRIAGE_PORT: String(gatewayPort),
        TRIAGE_API_KEYS_FILE: keysFile,
        TRIAGE_REDIS_URL: REDIS_URL,
        TRIAGE_REDIS_PREFIX: prefix,
        TRIAGE_DATA_DIR: path.join(work, 'data'),
        TRIAGE_MODELS_DIR: modelsDir,
        TRIAGE_CALLBACK_HTTP_HOSTS: '127.0.0.1',
        TRIAGE_WARMUP_RUNS: '5',
        TRIAGE_LOG_LEVEL: 'warn',
        TRIAGE_SHUTDOWN_GRACE_MS: '1000',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const receiver = spawn('node', [path.join(K6_DIR, 'callback-receiver.mjs')], {
      cwd: ROOT,
      env: { ...common, PORT: String(receiverPort), CALLBACK_SECRET: callbackSecret },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    for (const child of [gateway, receiver]) {
      children.push(child);
      child.stdout?.on('data', (d) => {
        logs += d;
      });
      child.stderr?.on('data', (d) => {
        logs += d;
      });
    }
    await waitUntilUp(`http://127.0.0.1:${receiverPort}/stats`, receiver, () => logs);
    await waitUntilUp(`http://127.0.0.1:${gatewayPort}/readyz`, gateway, () => logs);
    env = {
      BASE_URL: `http://127.0.0.1:${gatewayPort}/`,
      CLIENT_KEY: keys.client,
      REVIEWER_KEY: keys.reviewer,
      CALLBACK_URL: `http://127.0.0.1:${receiverPort}/hook`,
      RECEIVER_URL: `http://127.0.0.1:${receiverPort}`,
      POLL_MS: '50',
      BATCH_POLL_MS: '50',
      JOB_TIMEOUT_S: '30',
      BATCH_MODEL: batchModel,
      BATCH_INPUT: 'inputs/k6.ndjson',
      BATCH_TIMEOUT_S: '60',
    };
    http = syncHttp();
  });

  after(async () => {
    await http?.close();
    for (const child of children) child.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode === null ? new Promise((r) => c.once('exit', r)) : null)));
    rmSync(work, { recursive: true, force: true });
    await removeDir(modelsDir);
    await deletePrefix(prefix);
  });

  /** Loads the script, runs setup and each named function once, as k6 would, and returns what they recorded. */
  async function run(script: string, functions: string[]): Promise<K6State> {
    const state = newState(http.request);
    const mod = await loadScript(script, env, state);
    const data = typeof mod.setup === 'function' ? (mod.setup as () => unknown)() : undefined;
    for (const name of functions) {
      assert.equal(typeof mod[name], 'function', `${script} exports ${name}`);
      (mod[name] as (d: unknown) => void)(data);
    }
    if (typeof mod.teardown === 'function') (mod.teardown as (d: unknown) => void)(data);
    const failed = state.checks.filter((c) => !c.ok).map((c) => c.name);
    assert.deepEqual(failed, [], `${script}: failed checks\n${logs.slice(-3000)}`);
    assert.ok(state.checks.length > 0, `${script}: made checks`);
    return state;
  }

  const samples = (state: K6State, metric: string) => state.metrics.get(metric)?.samples ?? [];

  it('sync.js: both bedside models answer', async () => {
    await run('sync.js', ['news2', 'deterioration']);
  });

  it('async.js: a note is submitted, held, approved, released and called back, signed', async () => {
    const state = await run('async.js', ['jobFlow', 'jobFlow']);
    assert.deepEqual(samples(state, 'job_completed'), [true, true]);
    assert.equal(samples(state, 'job_time_to_release').length, 2);
    assert.deepEqual(samples(state, 'job_callback_delivered'), [true, true]);
  });

  it('mixed.js: sync, async and a batch run together', async () => {
    const state = await run('mixed.js', ['news2', 'deterioration', 'notes', 'batchRun']);
    assert.deepEqual(samples(state, 'batch_run_completed'), [true]);
    assert.deepEqual(samples(state, 'job_completed'), [true]);
  });

  it('overload.js: the overload and recovery requests are well-formed (no shedding at this trickle)', async () => {
    const state = await run('overload.js', ['overload', 'overload', 'recovery']);
    assert.deepEqual(samples(state, 'overload_unexpected_response'), [false, false]);
    // the summary's split of the peak: 503s and 504s are counted (none at this trickle)
    assert.equal(state.metrics.get('overload_shed')?.type, 'counter');
    assert.equal(state.metrics.get('overload_deadline_exceeded')?.type, 'counter');
    assert.deepEqual(samples(state, 'overload_deadline_exceeded'), []);
    assert.deepEqual(samples(state, 'recovery_ok'), [true]);
  });

  it("mixed.js's default batch model is a batch-tier model in models/", async () => {
    const source = readFileSync(path.join(K6_DIR, 'mixed.js'), 'utf8');
    const m = /BATCH_MODEL \|\| '([a-z0-9-]+)'/.exec(source);
    assert.equal(m?.[1], batchModel);
  });

  it('the receiver refuses a callback whose signature does not verify', async () => {
    const res = await fetch(`${env.RECEIVER_URL}/hook`, {
      method: 'POST',
      headers: {
        'webhook-id': 'evt-x',
        'webhook-timestamp': String(Math.floor(Date.now() / 1000)),
        'webhook-signature': 'v1,AAAA',
      },
      body: '{}',
    });
    assert.equal(res.status, 401);
    const stats = (await (await fetch(`${env.RECEIVER_URL}/stats`)).json()) as { rejected: number; verified: number };
    assert.equal(stats.rejected, 1);
    assert.ok(stats.verified >= 3, 'the jobs above were verified');
  });
});
