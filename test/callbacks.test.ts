/**
 * Signed callbacks through a real HTTP receiver that verifies every request with `standardwebhooks`: retries with
 * the same event id until the receiver is back, dead letters and their replay (same id), per-client signing
 * secrets, the failed event, and the SSRF guards at submission (callbackUrl policy) and at delivery (resolved
 * address).
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { DeliveryError, postEvent } from '../src/callbacks/deliver.ts';
import { checkCallbackUrl, isInternalAddress, namedExactly } from '../src/callbacks/url-policy.ts';
import { Problem } from '../src/platform/errors.ts';
import {
  ASYNC_WORKERS,
  allAudit,
  buildGateway,
  deletePrefix,
  makeKeys,
  makePrefix,
  metricValue,
  NEWS2_INSTANCE,
  NOTES,
  queueIdle,
  Receiver,
  type TestGateway,
  waitFor,
  waitForState,
} from './support/index.ts';

const keys = makeKeys();
const prefix = makePrefix('callbacks');
let gw: TestGateway;

before(async () => {
  gw = await buildGateway({
    workers: ASYNC_WORKERS,
    prefix,
    keys,
    only: ['news2', 'note-triage'],
    callbacks: { attempts: 4, backoffMs: 50 },
  });
});
after(async () => {
  await gw?.close();
  await deletePrefix(prefix);
});

/** a news2 job: released at once (no review), so its callback goes out straight away */
async function releasedJob(callbackUrl: string, key = keys.client): Promise<string> {
  const res = await gw.call('POST', '/v1/models/news2/jobs', key, {
    input: { instances: [NEWS2_INSTANCE] },
    callbackUrl,
  });
  assert.equal(res.status, 202, res.text);
  await waitForState(gw, key, res.body.id, 'released');
  return res.body.id;
}

async function scrape(): Promise<string> {
  return (await gw.call('GET', '/metrics', undefined)).text;
}
const attempts = (text: string, outcome: string) =>
  metricValue(text, 'triage_callback_attempts_total', { outcome }) ?? 0;

describe('delivery and retries', () => {
  let receiver: Receiver;
  before(async () => {
    receiver = await Receiver.start(keys.secrets.client);
  });
  after(async () => {
    await receiver?.close();
  });

  test('receiver down for the first 2 attempts, then up: delivered once, the same webhook-id on every attempt', async () => {
    const before = await scrape();
    receiver.failNext = 2;
    const id = await releasedJob(receiver.url('/flaky'));
    const eventId = `evt-${id}-released`;
    await waitFor(() => receiver.events.has(eventId), 'the delivery after two failures');
    await waitFor(() => queueIdle(gw.gateway.services.queues.callbacks), 'the callback queue to drain');
    const raw = receiver.deliveriesFor(id);
    assert.deepEqual(
      raw.map((d) => [d.id, d.status]),
      [
        [eventId, 503],
        [eventId, 503],
        [eventId, 204],
      ],
    );
    assert.ok(
      raw.every((d) => d.headers['webhook-signature']?.startsWith('v1,')),
      'every attempt is signed',
    );
    assert.equal(receiver.eventsFor(id).length, 1, 'one event after de-duplication');
    const parsed = raw.map((d) => JSON.parse(d.body) as { id: string; data: unknown });
    assert.ok(
      parsed.every((e) => e.id === eventId),
      'every body carries the event id',
    );
    assert.deepEqual(parsed[0]?.data, parsed[2]?.data, 'every attempt carries the same data');
    const after = await scrape();
    assert.equal(attempts(after, 'failed') - attempts(before, 'failed'), 2);
    assert.equal(attempts(after, 'delivered') - attempts(before, 'delivered'), 1);
  });

  test('the signature verifies only with the client secret, over the exact body and id', async () => {
    const id = await releasedJob(receiver.url('/sig'));
    await waitFor(() => receiver.events.has(`evt-${id}-released`), 'the delivery');
    const d = receiver.deliveriesFor(id).find((x) => x.verified)!;
    const headers = {
      'webhook-id': d.headers['webhook-id']!,
      'webhook-timestamp': d.headers['webhook-timestamp']!,
      'webhook-signature': d.headers['webhook-signature']!,
    };
    assert.doesNotThrow(() => new Webhook(keys.secrets.client).verify(d.body, headers));
    assert.throws(() => new Webhook(keys.secrets.other).verify(d.body, headers), /signature/i);
    assert.throws(() => new Webhook(keys.secrets.client).verify(d.body.replace('released', 'rejected'), headers));
    assert.throws(() => new Webhook(keys.secrets.client).verify(d.body, { ...headers, 'webhook-id': 'evt-other' }));
    assert.throws(() =>
      new Webhook(keys.secrets.client).verify(d.body, {
        ...headers,
        'webhook-timestamp': String(Number(headers['webhook-timestamp']) - 3600),
      }),
    );
  });

  test("each client's callbacks are signed with its own secret", async () => {
    const forB = await Receiver.start(keys.secrets.other);
    try {
      const id = await releasedJob(forB.url('/b'), keys.other);
      await waitFor(() => forB.events.has(`evt-${id}-released`), "client B's callback, verified with B's secret");
      const d = forB.deliveriesFor(id)[0]!;
      assert.throws(() => new Webhook(keys.secrets.client).verify(d.body, d.headers));
    } finally {
      await forB.close();
    }
  });

  test('a receiver that rejects the signature (wrong secret) never records the event', async () => {
    const wrong = await Receiver.start(keys.secrets.other);
    try {
      const id = await releasedJob(wrong.url('/wrong'));
      await waitFor(
        async () => (await gw.call('GET', '/v1/callbacks/dead-letters', keys.admin)).text.includes(id),
        'the event to dead-letter',
      );
      assert.equal(wrong.deliveriesFor(id).length, 4);
      assert.ok(
        wrong.deliveriesFor(id).every((x) => x.status === 401 && !x.verified),
        'every attempt failed verification',
      );
      assert.equal(wrong.eventsFor(id).length, 0);
    } finally {
      await wrong.close();
    }
  });
});

describe('dead letters and replay', () => {
  test('a receiver that never comes back: dead-lettered after `attempts`; replayed with the same event id', async () => {
    const receiver = await Receiver.start(keys.secrets.client);
    try {
      const deadBefore = metricValue(await scrape(), 'triage_callback_dead_letters_total') ?? 0;
      receiver.down = true;
      const id = await releasedJob(receiver.url('/down'));
      const eventId = `evt-${id}-released`;
      let letter: Record<string, unknown> | undefined;
      await waitFor(async () => {
        const res = await gw.call('GET', '/v1/callbacks/dead-letters', keys.admin);
        letter = res.body.items.find((l: { eventId: string }) => l.eventId === eventId);
        return letter !== undefined;
      }, 'the dead letter');
      assert.equal(letter?.jobId, id);
      assert.equal(letter?.event, 'released');
      assert.equal(letter?.attempts, 4);
      assert.match(String(letter?.error), /503/);
      assert.equal(receiver.deliveriesFor(id).length, 4);
      assert.ok(
        receiver.deliveriesFor(id).every((d) => d.id === eventId && d.status === 503),
        'every attempt had the same id and failed',
      );
      assert.equal(metricValue(await scrape(), 'triage_callback_dead_letters_total'), deadBefore + 1);
      assert.equal((await gw.call('GET', `/v1/jobs/${id}`, keys.client)).body.state, 'released');

      const reviewer = await gw.call('GET', '/v1/callbacks/dead-letters', keys.reviewer);
      assert.equal(reviewer.status, 403);

      receiver.down = false;
      const replay = await gw.call('POST', `/v1/callbacks/dead-letters/${eventId}/replay`, keys.admin);
      assert.equal(replay.status, 202, replay.text);
      assert.equal(replay.body.replayed.eventId, eventId);
      await waitFor(() => receiver.events.has(eventId), 'the replayed delivery');
      await waitFor(() => queueIdle(gw.gateway.services.queues.callbacks), 'the callback queue to drain');
      const raw = receiver.deliveriesFor(id);
      assert.equal(raw.length, 5);
      assert.ok(
        raw.every((d) => d.id === eventId),
        'the same event id on replay',
      );
      assert.equal(raw.filter((d) => d.verified).length, 1);
      assert.equal(receiver.events.get(eventId)?.type, 'org.triage.job.released');

      const list = await gw.call('GET', '/v1/callbacks/dead-letters', keys.admin);
      assert.ok(
        !list.body.items.some((l: { eventId: string }) => l.eventId === eventId),
        'the replayed letter left the dead-letter list',
      );
      const again = await gw.call('POST', `/v1/callbacks/dead-letters/${eventId}/replay`, keys.admin);
      assert.equal(again.status, 404);
      const audit = (await allAudit(gw, keys.admin)).filter((e) => e.target === eventId);
      assert.deepEqual(
        audit.map((e) => [e.action, e.actor]),
        [['callback.replay', 'admin']],
      );
    } finally {
      await receiver.close();
    }
  });
});

describe('the failed event', () => {
  test('a job whose model is no longer served fails, and its callback says so without a result', async () => {
    const p = makePrefix('failed');
    const front = await buildGateway({ prefix: p, keys, workers: ['callbacks'], only: ['note-triage'] });
    const worker = await buildGateway({ prefix: p, keys, workers: ['inference'], only: ['news2'] });
    const receiver = await Receiver.start(keys.secrets.client);
    try {
      const res = await front.call('POST', '/v1/models/note-triage/jobs', keys.client, {
        input: { text: NOTES.urgent },
        callbackUrl: receiver.url('/failed'),
      });
      assert.equal(res.status, 202, res.text);
      const job = await waitForState(front, keys.client, res.body.id, 'failed');
      assert.equal(job.error, 'the model is no longer served');
      assert.equal(job.result, undefined);
      const eventId = `evt-${res.body.id}-failed`;
      await waitFor(() => receiver.events.has(eventId), 'the failed callback');
      const event = receiver.events.get(eventId)!;
      assert.equal(event.type, 'org.triage.job.failed');
      assert.equal(event.data.state, 'failed');
      assert.equal(event.data.error, 'the model is no longer served');
      assert.equal(event.data.result, undefined);
      const audit = (await allAudit(front, keys.admin)).filter((e) => e.target === res.body.id);
      assert.deepEqual(
        audit.map((e) => e.action),
        ['job.fail'],
      );
    } finally {
      await receiver.close();
      await worker.close();
      await front.close();
      await deletePrefix(p);
    }
  });
});

describe('SSRF guards', () => {
  test('submission refuses callback URLs outside the policy (400 invalid_callback_url)', async () => {
    const refused: Array<[string, string, unknown]> = [
      ['client A', keys.client, 'http://hooks.example.org/cb'],
      ['client A', keys.client, 'https://hooks.example.org/cb'],
      ['client A', keys.client, 'http://169.254.169.254/latest/meta-data/'],
      ['client A', keys.client, 'http://10.0.0.5/cb'],
      ['client A', keys.client, 'http://user:pw@127.0.0.1/cb'],
      ['client A', keys.client, 'http://user@localhost/cb'],
      ['client A', keys.client, 'ftp://127.0.0.1/cb'],
      ['client A', keys.client, 'file:///etc/passwd'],
      ['client A', keys.client, 'javascript:alert(1)'],
      ['client A', keys.client, '/relative/path'],
      ['client A', keys.client, ''],
      ['client A', keys.client, 42],
      ['client A', keys.client, { url: 'http://127.0.0.1/' }],
      ['client A', keys.client, `http://127.0.0.1/${'a'.repeat(2100)}`],
      ['client B (allowlist 127.0.0.1 only)', keys.other, 'http://localhost/cb'],
      ['wildcard', keys.wildcard, 'http://hooks.example.org/cb'],
      ['wildcard', keys.wildcard, 'https://example.org/cb'],
      ['wildcard', keys.wildcard, 'https://hooks.example.org.evil.test/cb'],
      ['wildcard', keys.wildcard, 'https://evilexample.org/cb'],
      ['wildcard', keys.wildcard, 'https://169.254.169.254/'],
      ['wildcard', keys.wildcard, 'https://127.0.0.1/'],
      ['wildcard', keys.wildcard, 'https://[::1]/'],
      ['wildcard', keys.wildcard, 'https://[::ffff:127.0.0.1]/'],
      ['wildcard', keys.wildcard, 'https://2130706433/'],
      ['wildcard', keys.wildcard, 'https://a:b@hooks.example.org/'],
      ['wildcard', keys.wildcard, 'ftp://hooks.example.org/'],
    ];
    for (const [who, key, callbackUrl] of refused) {
      const res = await gw.call('POST', '/v1/models/news2/jobs', key, {
        input: { instances: [NEWS2_INSTANCE] },
        callbackUrl,
      });
      assert.equal(res.status, 400, `${who} ${String(callbackUrl).slice(0, 60)}: ${res.text}`);
      assert.equal(res.body.code, 'invalid_callback_url', `${who} ${String(callbackUrl).slice(0, 60)}`);
    }
    // controls: what the policy allows is accepted
    for (const [key, callbackUrl] of [
      [keys.wildcard, 'https://hooks.example.org/cb'],
      [keys.wildcard, 'https://a.b.example.org:8443/cb?x=1'],
      [keys.client, 'http://127.0.0.1:9/cb'],
      [keys.client, 'http://localhost:9/cb'],
    ] as const) {
      const res = await gw.call('POST', '/v1/models/news2/jobs', key, {
        input: { instances: [NEWS2_INSTANCE] },
        callbackUrl,
      });
      assert.equal(res.status, 202, `${callbackUrl}: ${res.text}`);
    }
  });

  test('isInternalAddress', () => {
    const table: Array<[string, boolean]> = [
      ['127.0.0.1', true],
      ['127.255.0.9', true],
      ['10.1.2.3', true],
      ['172.16.0.1', true],
      ['172.31.255.255', true],
      ['172.32.0.1', false],
      ['192.168.1.1', true],
      ['169.254.169.254', true],
      ['100.64.0.1', true],
      ['0.0.0.0', true],
      ['224.0.0.1', true],
      ['255.255.255.255', true],
      ['8.8.8.8', false],
      ['93.184.216.34', false],
      ['::1', true],
      ['::', true],
      ['fe80::1', true],
      ['fd12:3456::1', true],
      ['fc00::1', true],
      ['ff02::1', true],
      ['::ffff:127.0.0.1', true],
      ['::FFFF:127.0.0.1', true],
      ['::ffff:7f00:1', true],
      ['::ffff:169.254.169.254', true],
      ['::ffff:a9fe:a9fe', true],
      ['::ffff:10.0.0.1', true],
      ['::ffff:8.8.8.8', false],
      ['2001:4860:4860::8888', false],
      // IPv6 spellings of internal IPv4 addresses, and IPv6 ranges that are not global unicast (issue 10, item 8)
      ['::7f00:1', true],
      ['::127.0.0.1', true],
      ['::a9fe:a9fe', true],
      ['64:ff9b::a9fe:a9fe', true],
      ['64:ff9b::7f00:1', true],
      ['64:ff9b:1::a00:1', true],
      ['2002:a9fe:a9fe::1', true],
      ['2002:7f00:1::1', true],
      ['2001:0:a9fe:a9fe::1', true],
      ['fec0::1', true],
      ['::ffff:0:7f00:1', true],
      ['::ffff:0:a9fe:a9fe', true],
      ['fe80::1%eth0', true],
      ['2001:db8::1', true],
      ['100::1', true],
      ['2606:4700:4700::1111', false],
      ['hooks.example.org', false],
      ['not an address', false],
    ];
    for (const [address, internal] of table) assert.equal(isInternalAddress(address), internal, address);
  });

  test('checkCallbackUrl and namedExactly', () => {
    const http = ['127.0.0.1', 'localhost'];
    const ok = (raw: string, allow: string[], httpHosts = http) => checkCallbackUrl(raw, allow, httpHosts).toString();
    const refused = (raw: unknown, allow: string[], httpHosts = http) =>
      assert.throws(
        () => checkCallbackUrl(raw, allow, httpHosts),
        (err: unknown) => err instanceof Problem && err.code === 'invalid_callback_url',
        String(raw),
      );
    assert.equal(ok('https://hooks.example.org/cb#frag', ['*.example.org']), 'https://hooks.example.org/cb');
    assert.equal(ok('https://HOOKS.EXAMPLE.ORG/cb', ['*.example.org']), 'https://hooks.example.org/cb');
    assert.equal(ok('http://127.0.0.1:8080/cb', ['127.0.0.1']), 'http://127.0.0.1:8080/cb');
    assert.equal(ok('https://[::1]/cb', ['::1'], []), 'https://[::1]/cb', 'named exactly: loopback allowed');
    refused('https://127.0.0.1/', ['*.0.0.1']);
    refused('https://10.0.0.1/', ['*.0.1']);
    refused('https://[fe80::1]/', ['*']);
    refused('https://[::ffff:127.0.0.1]/', ['*.example.org']);
    refused('http://127.0.0.1/', ['127.0.0.1'], []);
    refused('https://hooks.example.org/', []);
    refused('https://example.org/', ['*.example.org']);
    refused('https://x.example.org@evil.test/', ['*.example.org']);
    refused('https://evil.test#.example.org', ['*.example.org']);
    refused('https://evil.test\\.example.org/', ['*.example.org']);
    refused('gopher://hooks.example.org/', ['*.example.org']);
    refused('ws://hooks.example.org/', ['*.example.org']);
    refused(undefined, ['*.example.org']);
    assert.equal(namedExactly('localhost', ['localhost']), true);
    assert.equal(namedExactly('hooks.example.org', ['*.example.org']), false);
    assert.equal(namedExactly('127.0.0.1', ['*.0.0.1', 'localhost']), false);
  });

  test('delivery refuses a name that resolves to an internal address unless the allowlist names it exactly', async () => {
    const receiver = await Receiver.start(keys.secrets.client);
    try {
      const send = (url: string, allowInternal: boolean) =>
        postEvent(new URL(url), '{}', { 'webhook-id': 'evt-guard' }, { timeoutMs: 2000, allowInternal });
      // `localhost` resolves to loopback (/etc/hosts): a wildcard allowlist never reaches it
      const allowInternal = namedExactly('localhost', ['*.example.org', '*.localhost']);
      assert.equal(allowInternal, false);
      await assert.rejects(
        send(`http://localhost:${receiver.port}/guard`, allowInternal),
        (err: unknown) => err instanceof DeliveryError && !err.retryable && /private or link-local/.test(err.message),
      );
      await assert.rejects(
        send(`http://127.0.0.1:${receiver.port}/guard`, false),
        (err: unknown) => err instanceof DeliveryError && !err.retryable,
      );
      await assert.rejects(
        send(`http://[::ffff:127.0.0.1]:${receiver.port}/guard`, false),
        (err: unknown) => err instanceof DeliveryError && !err.retryable,
      );
      assert.equal(receiver.deliveries.length, 0, 'nothing reached the internal address');
      // control: named exactly, the same address is reached (the unsigned request is refused by the receiver)
      await assert.rejects(
        send(`http://localhost:${receiver.port}/guard`, true),
        (err: unknown) => err instanceof DeliveryError && err.retryable && /401/.test(err.message),
      );
      assert.equal(receiver.deliveries.length, 1, 'the control request reached the receiver');
    } finally {
      await receiver.close();
    }
  });
});
