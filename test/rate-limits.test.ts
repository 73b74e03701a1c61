/**
 * Rate limits: per client and endpoint class, 429 problem+json with Retry-After and the IETF RateLimit fields; submit
 * limits and failed-authentication throttling shared by replicas through Redis, predict and the rest per replica.
 * Two gateways on real sockets share one Redis prefix (two replicas) and one clock that moves only when told.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { Redis } from 'ioredis';
import { ApiKeyStore, hashKey } from '../src/platform/auth.ts';
import { ConfigError, loadConfig } from '../src/platform/config.ts';
import { RateLimiter, type RateLimitSettings } from '../src/platform/rate-limit.ts';
import { manualClock } from './security-support.ts';
import {
  buildGateway,
  deletePrefix,
  HANG_GUARD_MS,
  makePrefix,
  NEWS2_INSTANCE,
  type TestGateway,
} from './support/index.ts';

const secret = (name: string) => `trg_${name}_${randomBytes(16).toString('hex')}`;
const KEYS = { plain: secret('plain'), fast: secret('fast'), reader: secret('reader'), submitter: secret('sub') };
const store = new ApiKeyStore([
  { id: 'plain', role: 'client', sha256: hashKey(KEYS.plain) },
  { id: 'fast', role: 'client', sha256: hashKey(KEYS.fast), rateLimits: { predict: '5/1s' } },
  { id: 'reader', role: 'client', sha256: hashKey(KEYS.reader) },
  { id: 'submitter', role: 'client', sha256: hashKey(KEYS.submitter) },
]);
const settings = (trustedProxies: string[]): RateLimitSettings => ({
  classes: {
    predict: { limit: 3, windowSeconds: 1 },
    submit: { limit: 2, windowSeconds: 1 },
    default: { limit: 4, windowSeconds: 1 },
  },
  authFailures: { limit: 3, windowSeconds: 60 },
  trustedProxies,
});

describe('rate limits', { timeout: HANG_GUARD_MS }, () => {
  const prefix = makePrefix('ratelimit');
  const clock = manualClock();
  let a: TestGateway; // trusts 127.0.0.1 as a proxy: X-Forwarded-For names the client
  let b: TestGateway; // trusts no proxy
  const predict = (gw: TestGateway, key: string) =>
    gw.call('POST', '/v1/models/news2/predict', key, { instances: [NEWS2_INSTANCE] });
  const submit = (gw: TestGateway, key: string) =>
    gw.call('POST', '/v1/models/note-triage/jobs', key, { input: { text: 'Routine review in clinic.' } });

  before(async () => {
    const common = { prefix, keyStore: store, now: clock.now, only: ['news2', 'note-triage'], listen: true };
    a = await buildGateway({ ...common, rateLimits: settings(['127.0.0.1']) });
    b = await buildGateway({ ...common, rateLimits: settings([]) });
  });
  after(async () => {
    await a?.close();
    await b?.close();
    await deletePrefix(prefix);
  });

  test('predict: 429 problem+json past the limit, with Retry-After and RateLimit fields; refills with time', async () => {
    for (let i = 0; i < 3; i++) assert.equal((await predict(a, KEYS.plain)).status, 200);
    const refused = await predict(a, KEYS.plain);
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get('content-type'), 'application/problem+json');
    assert.equal(refused.body.code, 'rate_limited');
    assert.equal(refused.headers.get('retry-after'), '1');
    assert.equal(refused.headers.get('ratelimit-policy'), '"predict";q=3;w=1');
    assert.equal(refused.headers.get('ratelimit'), '"predict";r=0;t=1');
    clock.advance(340); // one request's worth (1000 ms / 3)
    assert.equal((await predict(a, KEYS.plain)).status, 200);
    assert.equal((await predict(a, KEYS.plain)).status, 429);
    clock.advance(1000);
    for (let i = 0; i < 3; i++) assert.equal((await predict(a, KEYS.plain)).status, 200);
  });

  test('a key can have its own limit', async () => {
    const statuses = [];
    for (let i = 0; i < 6; i++) statuses.push((await predict(a, KEYS.fast)).status);
    assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429]);
  });

  test('classes are counted apart; answers other than predict carry the RateLimit fields', async () => {
    for (let i = 0; i < 4; i++) await predict(a, KEYS.reader);
    const read = await a.call('GET', '/v1/models', KEYS.reader);
    assert.equal(read.status, 200, 'an exhausted predict limit leaves reads alone');
    assert.equal(read.headers.get('ratelimit-policy'), '"default";q=4;w=1');
    assert.equal(read.headers.get('ratelimit'), '"default";r=3;t=1');
  });

  test('predict is counted per replica: another replica has its own bucket', async () => {
    clock.advance(1000);
    for (let i = 0; i < 3; i++) assert.equal((await predict(a, KEYS.plain)).status, 200);
    assert.equal((await predict(a, KEYS.plain)).status, 429);
    assert.equal((await predict(b, KEYS.plain)).status, 200);
  });

  test('submissions are counted across replicas through Redis, Prefer: respond-async included', async () => {
    const first = await submit(a, KEYS.submitter);
    assert.equal(first.status, 202);
    assert.equal(first.headers.get('ratelimit'), '"submit";r=1;t=1');
    const second = await b.call(
      'POST',
      '/v1/models/note-triage/predict',
      KEYS.submitter,
      { text: 'Stable.' },
      {
        prefer: 'respond-async',
      },
    );
    assert.equal(second.status, 202, second.text);
    const third = await submit(a, KEYS.submitter);
    assert.equal(third.status, 429);
    assert.equal(third.headers.get('ratelimit-policy'), '"submit";q=2;w=1');
    clock.advance(500);
    assert.equal((await submit(b, KEYS.submitter)).status, 202);
  });

  test('failed authentication is throttled per source address, before any credential is checked', async () => {
    const from = (address: string) => ({ 'x-forwarded-for': `198.51.100.99, ${address}` });
    const attempt = (key: string | undefined, address: string) =>
      a.call('GET', '/v1/models', key, undefined, from(address));
    for (let i = 0; i < 5; i++)
      assert.equal((await attempt(undefined, '203.0.113.7')).status, 401, 'no credential: not counted');
    for (let i = 0; i < 3; i++) assert.equal((await attempt('wrong-key', '203.0.113.7')).status, 401);
    const blocked = await attempt('wrong-key', '203.0.113.7');
    assert.equal(blocked.status, 429);
    assert.equal(blocked.body.code, 'rate_limited');
    assert.equal(blocked.headers.get('retry-after'), '20');
    assert.equal(blocked.headers.get('ratelimit-policy'), '"auth-failures";q=3;w=60');
    assert.equal((await attempt(KEYS.reader, '203.0.113.7')).status, 429, 'a blocked address is refused outright');
    assert.equal((await attempt(KEYS.reader, '203.0.113.8')).status, 200, 'other addresses are not');
    clock.advance(20_000);
    assert.equal((await attempt('wrong-key', '203.0.113.7')).status, 401, 'one more try after Retry-After');
    assert.equal((await attempt('wrong-key', '203.0.113.7')).status, 429);
  });

  test('IPv6 clients are counted by their /64', async () => {
    const attempt = (address: string) =>
      a.call('GET', '/v1/models', 'wrong-key', undefined, { 'x-forwarded-for': address });
    for (const host of ['1', '2', 'abcd:1']) assert.equal((await attempt(`2001:db8:7:1::${host}`)).status, 401);
    assert.equal((await attempt('2001:db8:7:1:ffff::9')).status, 429);
    assert.equal((await attempt('2001:db8:7:2::1')).status, 401);
  });

  test('failures count across replicas, and X-Forwarded-For from an untrusted peer is ignored', async () => {
    // b trusts no proxy: every one of these comes from 127.0.0.1, whatever the header claims
    for (let i = 0; i < 3; i++) {
      const res = await b.call('GET', '/v1/models', 'wrong-key', undefined, { 'x-forwarded-for': `192.0.2.${i}` });
      assert.equal(res.status, 401);
    }
    // a sees 127.0.0.1 too (no header): the shared count is already spent
    assert.equal((await a.call('GET', '/v1/models', 'wrong-key')).status, 429);
  });
});

describe('without Redis the limiter fails open', () => {
  test('a shared step Redis cannot answer lets the request through (401 stays 401, not 500)', async () => {
    const redis = new Redis({ port: 1, lazyConnect: true, enableOfflineQueue: false });
    redis.on('error', () => {});
    const limiter = new RateLimiter({ redis, prefix: '{unreachable}', settings: settings([]) });
    const principal = { id: 'x', role: 'client' as const, models: new Set(['*']), callbackHosts: [] };
    assert.equal(await limiter.authFailed('203.0.113.1'), undefined);
    assert.equal(await limiter.take(principal, 'submit'), undefined);
    assert.equal((limiter.take(principal, 'predict') as { allowed: boolean }).allowed, true, 'predict needs no Redis');
    redis.disconnect();
  });
});

describe('rate limit configuration', () => {
  test('defaults, per-variable overrides and off', () => {
    const c = loadConfig({});
    assert.deepEqual(c.rateLimits.classes.predict, { limit: 100, windowSeconds: 1 });
    assert.deepEqual(c.rateLimits.authFailures, { limit: 20, windowSeconds: 60 });
    const d = loadConfig({ TRIAGE_RATE_LIMIT_SUBMIT: '600/m', TRIAGE_RATE_LIMIT_PREDICT: 'off' });
    assert.deepEqual(d.rateLimits.classes.submit, { limit: 600, windowSeconds: 60 });
    assert.equal(d.rateLimits.classes.predict, null);
    assert.throws(() => loadConfig({ TRIAGE_RATE_LIMIT_DEFAULT: '10 per second' }), /TRIAGE_RATE_LIMIT_DEFAULT/);
    assert.throws(() => loadConfig({ TRIAGE_TRUSTED_PROXIES: '10.0.0.0/40' }), /TRIAGE_TRUSTED_PROXIES/);
  });

  test('a key entry with a bad rate is refused at start, naming the field', () => {
    const doc = JSON.stringify({
      keys: [{ id: 'x', role: 'client', sha256: 'a'.repeat(64), rateLimits: { predict: 'lots' } }],
    });
    assert.throws(
      () => ApiKeyStore.parse(doc),
      (err) => err instanceof ConfigError && /rateLimits\.predict/.test(err.message),
    );
  });

  test('production may run on token issuers alone', () => {
    const c = loadConfig({ TRIAGE_ENV: 'production', TRIAGE_OIDC_ISSUERS: 'issuers: []' });
    assert.equal(c.host, '0.0.0.0');
    assert.throws(() => loadConfig({ TRIAGE_ENV: 'production' }), /TRIAGE_API_KEYS/);
  });
});
