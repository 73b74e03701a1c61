/**
 * Deadlines fire on time in a busy loop, and a sync scoring's deadline counts from the request's arrival.
 */
import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Admission } from '../src/platform/admission.ts';
import { Deadlines, deadlines } from '../src/platform/deadlines.ts';
import { admissionGate } from '../src/sync/admission-gate.ts';
import { buildGateway, metricValue, NEWS2_INSTANCE, RuntimeControl, sleep, type TestGateway } from './support/index.ts';

/** Keeps the thread busy (no timer can fire) until `ms` have passed. */
function spin(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    /* a long turn of the event loop */
  }
}

describe('Deadlines', () => {
  it('fires each deadline once, earliest first, whatever the order they were added in', async () => {
    const d = new Deadlines();
    const fired: string[] = [];
    d.add(30, () => fired.push('c'));
    d.add(5, () => fired.push('a'));
    d.add(15, () => fired.push('b'));
    assert.equal(d.pending, 3);
    await sleep(80);
    assert.deepEqual(fired, ['a', 'b', 'c']);
    assert.equal(d.pending, 0);
  });

  it('a cancelled deadline never fires, and with none pending no timer is held', async () => {
    const d = new Deadlines();
    const fired: string[] = [];
    const a = d.add(5, () => fired.push('a'));
    const b = d.add(10, () => fired.push('b'));
    a.cancel();
    a.cancel(); // idempotent
    assert.equal(d.pending, 1);
    b.cancel();
    assert.equal(d.pending, 0);
    await sleep(40);
    assert.deepEqual(fired, []);
  });

  it('sweep fires what is due inside a long turn, before any timer could', () => {
    const d = new Deadlines();
    const fired: string[] = [];
    d.add(2, () => fired.push('due'));
    const later = d.add(60_000, () => fired.push('later'));
    d.sweep();
    assert.equal(fired.length, 0, 'nothing is due yet');
    spin(10);
    d.sweep(); // still in the same turn: no timer has had a chance to run
    assert.deepEqual(fired, ['due']);
    assert.equal(d.pending, 1);
    d.sweep();
    assert.equal(fired.length, 1, 'fired once');
    // cancelling the one left releases the timer (else this file would wait a minute to exit)
    later.cancel();
    assert.equal(d.pending, 0);
  });

  it('a deadline whose callback throws does not keep the others from firing', async () => {
    const d = new Deadlines();
    const fired: string[] = [];
    const thrown: unknown[] = [];
    const listener = (err: unknown) => thrown.push(err);
    // the throw is rethrown outside the sweep (as a timer's would be): caught here instead of failing the test
    const previous = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    process.on('uncaughtException', listener);
    try {
      d.add(1, () => {
        throw new Error('boom');
      });
      d.add(1, () => fired.push('second'));
      spin(5);
      d.sweep();
      assert.deepEqual(fired, ['second']);
      await sleep(10);
      assert.equal((thrown[0] as Error | undefined)?.message, 'boom');
    } finally {
      process.removeListener('uncaughtException', listener);
      for (const l of previous) process.on('uncaughtException', l);
    }
  });

  it('the admission gate sweeps the process deadlines for every request it sees', () => {
    const fired: string[] = [];
    const deadline = deadlines.add(1, () => fired.push('due'));
    try {
      const gate = admissionGate({
        admission: new Admission({ targetLagMs: 0 }),
        catalog: { get: () => undefined },
        // never used: nothing is refused
        metrics: {} as never,
      });
      let reached = false;
      spin(5);
      gate.guard(() => {
        reached = true;
      })({ method: 'GET', url: '/healthz', headers: {} } as IncomingMessage, {} as ServerResponse);
      assert.ok(reached);
      assert.deepEqual(fired, ['due'], 'the deadline fired in the same turn, at the request');
    } finally {
      deadline.cancel();
    }
  });
});

describe('the gateway: a deadline counts from the request arrival, and is checked at every answer', () => {
  const control = new RuntimeControl();
  let t: TestGateway;
  before(async () => {
    // news2's own budget (50 ms), on a real socket behind the admission gate
    t = await buildGateway({ runtimeFactory: control.factory(), realBudgets: true, listen: true, only: ['news2'] });
    assert.equal(t.deps.catalog.get('news2')?.manifest.sync?.latencyBudgetMs, 50);
  });
  after(async () => {
    await t.close();
  });

  /** POST predict over a raw socket, the body sent `pauseMs` after the headers; resolves with the raw answer. */
  async function slowBody(pauseMs: number): Promise<{ status: number; body: Record<string, unknown> }> {
    const body = JSON.stringify({ instances: [NEWS2_INSTANCE] });
    const { port } = new URL(t.url);
    const socket = net.connect(Number(port), '127.0.0.1');
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    const ended = new Promise<void>((resolve) => socket.once('end', resolve));
    socket.write(
      'POST /v1/models/news2/predict HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\n' +
        `authorization: Bearer ${t.keys.client}\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, 5)}`,
    );
    await sleep(pauseMs);
    socket.write(body.slice(5));
    await ended;
    const text = Buffer.concat(chunks).toString('utf8');
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1]);
    return { status, body: JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)) as Record<string, unknown> };
  }

  it('a request whose body takes longer than the budget to arrive gets its 504 (deadline 50 ms), never a late score', async () => {
    const metricsBefore = await t.metrics();
    const exceededBefore = metricValue(metricsBefore, 'triage_deadline_exceeded_total', { model: 'news2' }) ?? 0;
    const { status, body } = await slowBody(120);
    assert.equal(status, 504);
    assert.equal(body.code, 'deadline_exceeded');
    assert.equal(body.deadlineMs, 50, "the refusal names the caller's deadline, not what was left of it");
    assert.equal(body.predictions, undefined);
    const exceededAfter = metricValue(await t.metrics(), 'triage_deadline_exceeded_total', { model: 'news2' });
    assert.equal(exceededAfter, exceededBefore + 1);
  });

  it('the app sweeps the process deadlines after each answer (a long turn of answers lets no timer run)', async () => {
    const fired: string[] = [];
    const deadline = deadlines.add(1, () => fired.push('due'));
    try {
      spin(5);
      // in process (no socket, so no gate): the liveness answer takes no I/O, so no timer can run before it is sent
      const res = await t.app.request('/healthz');
      assert.equal(res.status, 200);
      assert.deepEqual(fired, ['due'], 'the deadline fired at the answer, before any timer could');
    } finally {
      deadline.cancel();
    }
  });

  it('a body that arrives within the budget is scored', async () => {
    const { status, body } = await slowBody(0);
    assert.equal(status, 200, JSON.stringify(body));
    assert.equal((body.predictions as unknown[]).length, 1);
  });
});
