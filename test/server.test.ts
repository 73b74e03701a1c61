/**
 * Smoke test over real sockets: `startGateway` as `main()` runs it (config from the environment shape, real Redis, the
 * bundled models), a prediction over HTTP, and a graceful shutdown that drains a request in flight.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { hashKey } from '../src/platform/auth.ts';
import { loadConfig } from '../src/platform/config.ts';
import { type RunningGateway, startGateway } from '../src/server.ts';
import { captureLogs, deletePrefix, generousModels, REDIS_URL, removeDir } from './support/index.ts';

const PREFIX = `{triage-smoke-${process.pid}}`;
const KEY = `trg_smoke_${Date.now().toString(36)}_0123456789`;
// FHIR example vitals (see predict.test.ts): NEWS2 6, medium risk
const NEWS2 = {
  respirationRate: 26,
  spo2: 95,
  onOxygen: false,
  systolicBP: 107,
  pulse: 44,
  consciousness: 'alert',
  temperature: 36.5,
};

describe('gateway over real HTTP', () => {
  let gateway: RunningGateway;
  let stderr = '';
  const logs = captureLogs('info');
  /** the bundled models with generous budgets: this test is about serving and draining, not deadlines */
  let modelsDir: string;
  before(async () => {
    modelsDir = await generousModels();
    const config = loadConfig({
      TRIAGE_ENV: 'production',
      TRIAGE_API_KEYS: `keys:\n  - id: smoke\n    role: client\n    sha256: ${hashKey(KEY)}\n`,
      TRIAGE_HOST: '127.0.0.1',
      TRIAGE_PORT: '0',
      TRIAGE_REDIS_URL: REDIS_URL,
      TRIAGE_REDIS_PREFIX: PREFIX,
      TRIAGE_MODELS_DIR: modelsDir,
      TRIAGE_WARMUP_RUNS: '5',
      TRIAGE_WORKERS: 'none',
      TRIAGE_MAX_BODY_BYTES: '2048',
      // shorter than Node's keep-alive timeout (5 s): a drain that waited for idle keep-alive connections to time out
      // would run into it
      TRIAGE_SHUTDOWN_GRACE_MS: '2000',
    });
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      stderr += String(chunk);
      return write(chunk, ...(rest as []));
    }) as typeof process.stderr.write;
    try {
      gateway = await startGateway(config, logs.logger);
    } finally {
      process.stderr.write = write;
    }
  });
  after(async () => {
    await gateway?.shutdown();
    await deletePrefix(PREFIX);
    await removeDir(modelsDir);
  });

  it('listens on the configured loopback host with a free port, without a development banner', () => {
    assert.match(gateway.url, /^http:\/\/127\.0\.0\.1:\d+$/);
    assert.notEqual(gateway.url, 'http://127.0.0.1:0');
    assert.ok(!stderr.includes('development mode'), stderr);
  });

  it('predicts over HTTP and answers the ops endpoints', async () => {
    const res = await fetch(`${gateway.url}/v1/models/news2/predict`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ instances: [NEWS2] }),
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-model-name'), 'news2');
    assert.equal(res.headers.get('x-model-version'), '1');
    const body = (await res.json()) as { predictions: Array<{ news2Total: number; clinicalRisk: string }> };
    assert.deepEqual(
      body.predictions.map((p) => [p.news2Total, p.clinicalRisk]),
      [[6, 'medium']],
    );

    const unauthenticated = await fetch(`${gateway.url}/v1/models/news2/predict`, { method: 'POST' });
    assert.equal(unauthenticated.status, 401);
    assert.equal(unauthenticated.headers.get('content-type'), 'application/problem+json');
    await unauthenticated.body?.cancel();

    assert.equal((await fetch(`${gateway.url}/healthz`)).status, 200);
    const ready = await fetch(`${gateway.url}/readyz`);
    assert.equal(ready.status, 200);
    assert.equal(((await ready.json()) as { status: string }).status, 'ready');
    const metrics = await (await fetch(`${gateway.url}/metrics`)).text();
    assert.match(metrics, /triage_http_request_duration_seconds_count\{[^}]*model="news2"/);
    assert.match(metrics, /^process_cpu_user_seconds_total /m, 'process metrics are on in the server');
  });

  it('refuses a chunked body over TRIAGE_MAX_BODY_BYTES with 413', async () => {
    const chunk = new TextEncoder().encode(' '.repeat(512));
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent++ < 8) controller.enqueue(chunk);
        else controller.close();
      },
    });
    const res = await fetch(`${gateway.url}/v1/models/news2/predict`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
      body,
      duplex: 'half',
    } as RequestInit);
    assert.equal(res.status, 413);
    assert.equal(((await res.json()) as { code: string }).code, 'payload_too_large');
  });

  it('answers a request node:http cannot parse with problem+json and a stable code, not a bare status line', async () => {
    /** what the server answers to these raw bytes, read until it closes the connection */
    const raw = (bytes: string) =>
      new Promise<string>((resolve, reject) => {
        const { port } = new URL(gateway.url);
        const socket = net.connect(Number(port), '127.0.0.1', () => socket.end(bytes));
        let answer = '';
        socket.setEncoding('utf8');
        socket.on('data', (d: string) => {
          answer += d;
        });
        socket.on('end', () => resolve(answer));
        socket.on('error', reject);
      });
    const cases = [
      {
        bytes: `POST /v1/models/news2/predict HTTP/1.1\r\nHost: x\r\nContent-Length: zq9x\r\n\r\n`,
        status: 400,
        code: 'invalid_header',
      },
      // past node:http's 16 KiB of headers
      {
        bytes: `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ${'a'.repeat(20_000)}\r\n\r\n`,
        status: 431,
        code: 'headers_too_large',
      },
      { bytes: 'HELLO THERE\r\n\r\n', status: 400, code: 'invalid_request' },
    ];
    for (const c of cases) {
      const answer = await raw(c.bytes);
      const [head = '', body = ''] = answer.split('\r\n\r\n');
      assert.match(head, new RegExp(`^HTTP/1.1 ${c.status} `), answer.slice(0, 200));
      assert.match(head, /\r\ncontent-type: application\/problem\+json\r\n/i);
      assert.match(head, /\r\nx-content-type-options: nosniff/i);
      const problem = JSON.parse(body);
      assert.equal(problem.status, c.status);
      assert.equal(problem.code, c.code);
      // nothing the caller sent comes back
      assert.ok(!body.includes('zq9x') && !body.includes('aaaa') && !body.includes('HELLO'), body);
    }
  });

  it('shuts down gracefully: drains the request in flight, then refuses connections', async () => {
    const { port } = new URL(gateway.url);
    const payload = JSON.stringify({ instances: [NEWS2] });
    // a request whose body is still on its way when shutdown starts: `Expect: 100-continue` tells us the server has
    // its headers (it answers 100 Continue), so the connection is busy, not idle
    const req = http.request({
      host: '127.0.0.1',
      port: Number(port),
      method: 'POST',
      path: '/v1/models/news2/predict',
      headers: {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(payload),
        authorization: `Bearer ${KEY}`,
        expect: '100-continue',
      },
    });
    const response = new Promise<{ status: number; body: string }>((resolve, reject) => {
      req.once('response', (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          text += d;
        });
        res.once('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
        res.once('error', reject);
      });
      req.once('error', reject);
    });
    await new Promise<void>((resolve) => req.once('continue', resolve));

    let stopped = false;
    const stopping = gateway.shutdown().then(() => {
      stopped = true;
    });
    assert.equal(gateway.shutdown(), gateway.shutdown(), 'shutdown is idempotent');
    // no new connections while draining
    await assert.rejects(fetch(`${gateway.url}/healthz`), TypeError);
    assert.equal(stopped, false, 'shutdown waits for the request in flight');

    req.end(payload);
    const { status, body } = await response;
    assert.equal(status, 200);
    assert.equal((JSON.parse(body) as { predictions: Array<{ news2Total: number }> }).predictions[0]?.news2Total, 6);
    await stopping;
    assert.equal(stopped, true);
    // the drained connection was closed once idle, without waiting out the grace period
    const messages = logs.lines.map((l) => (JSON.parse(l) as { msg: string }).msg);
    assert.ok(messages.includes('stopped'));
    assert.ok(!messages.includes('grace period over: closing the remaining connections'), messages.join('\n'));
    const logText = logs.lines.join('');
    assert.ok(!logText.includes(KEY) && !logText.includes('"pulse"'), 'no key or patient data in the server logs');
    await assert.rejects(fetch(`${gateway.url}/healthz`), (err: unknown) => {
      assert.ok(err instanceof TypeError);
      assert.equal((err.cause as NodeJS.ErrnoException | undefined)?.code, 'ECONNREFUSED');
      return true;
    });
  });
});
