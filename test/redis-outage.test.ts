/**
 * Redis away: the gateway fails fast and loses nothing. A TCP proxy in front of the real Redis either drops every
 * connection (Redis stopped) or keeps them open and answers nothing (Redis hung). Endpoints that need Redis answer
 * 503 `dependency_unavailable` with Retry-After quickly (no hang, no 500), bedside scoring goes on, /metrics still
 * serves, and everything works again once Redis is back, without a restart.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { buildGateway, httpCall, REDIS_URL, type TestGateway, waitFor } from './support/index.ts';

/** A proxy to the real Redis that can drop its connections (down) or hold requests (silent: Redis hung). */
function redisProxy() {
  const upstream = new URL(REDIS_URL);
  let mode: 'up' | 'down' | 'silent' = 'up';
  const sockets = new Set<net.Socket>();
  const held: Array<() => void> = [];
  const server = net.createServer((client) => {
    if (mode === 'down') {
      client.destroy();
      return;
    }
    const redis = net.connect(Number(upstream.port || 6379), upstream.hostname);
    for (const s of [client, redis]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        sockets.delete(s);
        client.destroy();
        redis.destroy();
      });
    }
    // hung: requests are held, as a stopped Redis process holds them, and delivered when it resumes
    client.on('data', (d) => {
      if (mode === 'up') redis.write(d);
      else held.push(() => redis.write(d));
    });
    redis.on('data', (d) => client.write(d));
  });
  return {
    server,
    set(next: 'up' | 'down' | 'silent') {
      mode = next;
      if (next === 'down') for (const s of sockets) s.destroy();
      if (next === 'up') for (const deliver of held.splice(0)) deliver();
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

const NEWS2 = {
  respirationRate: 22,
  spo2: 93,
  onOxygen: true,
  systolicBP: 105,
  pulse: 115,
  consciousness: 'alert',
  temperature: 38.5,
};

let proxy: ReturnType<typeof redisProxy>;
let t: TestGateway;

before(async () => {
  proxy = redisProxy();
  await new Promise<void>((resolve) => proxy.server.listen(0, '127.0.0.1', resolve));
  const { port } = proxy.server.address() as net.AddressInfo;
  t = await buildGateway({
    redisUrl: `redis://127.0.0.1:${port}`,
    sync: { '*': { latencyBudgetMs: 2000 } },
    redisCommandTimeoutMs: 500, // the production timeout: this file is about it
  });
});

after(async () => {
  proxy.set('up');
  await t?.close();
  await proxy?.close();
});

/** Every endpoint that needs Redis, as its role calls it. */
function redisCalls() {
  // an id that names a model's shard (an id naming none is unknown without asking Redis)
  const id = t.gateway.services.keyspace.newId('note-triage');
  return [
    {
      name: 'submit a job',
      run: () => call('POST', '/v1/models/note-triage/jobs', t.keys.client, { input: { text: 'Chest pain.' } }),
    },
    { name: 'job status', run: () => call('GET', `/v1/jobs/${id}`, t.keys.client) },
    { name: 'review queue', run: () => call('GET', '/v1/reviews', t.keys.reviewer) },
    { name: 'one review', run: () => call('GET', `/v1/reviews/${id}`, t.keys.reviewer) },
    { name: 'audit trail', run: () => call('GET', '/v1/audit', t.keys.admin) },
    { name: 'dead letters', run: () => call('GET', '/v1/callbacks/dead-letters', t.keys.admin) },
    { name: 'schedules', run: () => call('GET', '/v1/schedules', t.keys.admin) },
    { name: 'shadow report', run: () => call('GET', '/v1/models/deterioration/shadow', t.keys.client) },
    {
      name: 'promote',
      run: () => call('POST', '/v1/models/deterioration/routing/promote', t.keys.admin, { version: '2', reason: 'x' }),
    },
  ];
}

function call(method: string, url: string, key: string, body?: unknown) {
  return httpCall(t.app, method, url, key, body);
}

for (const mode of ['down', 'silent'] as const) {
  describe(`Redis ${mode === 'down' ? 'stopped' : 'hung'}`, () => {
    before(async () => {
      // from a connected gateway: the outage starts on a live connection, as it does in production
      await waitFor(async () => (await t.app.request('/readyz')).status === 200, 'Redis to be reachable', 30_000, 50);
      proxy.set(mode);
    });
    after(() => proxy.set('up'));

    it('every endpoint that needs Redis answers 503 dependency_unavailable with Retry-After, not a hang or a 500', async (ctx) => {
      const timings: number[] = [];
      for (const { name, run } of redisCalls()) {
        const started = performance.now();
        const res = await run();
        timings.push(performance.now() - started);
        ctx.diagnostic(`${name}: ${(performance.now() - started).toFixed(0)} ms`);
        assert.equal(res.status, 503, `${name}: ${res.status} ${res.text}`);
        assert.equal(res.headers.get('content-type'), 'application/problem+json', name);
        assert.equal(res.body.code, 'dependency_unavailable', name);
        assert.equal(res.headers.get('retry-after'), '1', name);
      }
      const sorted = [...timings].sort((a, b) => a - b);
      ctx.diagnostic(
        `503 latency ms: p50 ${sorted[Math.floor(sorted.length / 2)]?.toFixed(1)}, max ${sorted.at(-1)?.toFixed(1)}`,
      );
      // not a timing assertion on the machine's speed: the command timeout is 500 ms; a hang would be far longer
      assert.ok(Math.max(...timings) < 10_000, `slowest 503 took ${Math.max(...timings).toFixed(0)} ms`);
    });

    it('bedside scoring goes on, and /metrics still serves', async () => {
      const res = await call('POST', '/v1/models/news2/predict', t.keys.client, { instances: [NEWS2] });
      assert.equal(res.status, 200, res.text);
      assert.equal(res.body.predictions[0].news2Total, 10);
      const metrics = await t.app.request('/metrics');
      assert.equal(metrics.status, 200);
      assert.match(await metrics.text(), /triage_http_request_duration_seconds/);
    });
  });
}

describe('Redis back', () => {
  it('jobs are accepted again without a restart', async () => {
    proxy.set('up');
    // ioredis reconnects with backoff: until it has, calls still get the 503
    await waitFor(async () => (await t.app.request('/readyz')).status === 200, 'the gateway to reconnect', 30_000, 50);
    const res = await call('POST', '/v1/models/note-triage/jobs', t.keys.client, { input: { text: 'Chest pain.' } });
    assert.equal(res.status, 202, res.text);
    const status = await call('GET', `/v1/jobs/${res.body.id}`, t.keys.client);
    assert.equal(status.status, 200);
  });
});
