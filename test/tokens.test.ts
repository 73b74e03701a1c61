/**
 * Bearer tokens of named people beside API keys: JWTs signed with keys generated here, published by a real local
 * issuer (discovery + JWKS on a socket), verified by the gateway through jose; the person recorded on decisions,
 * releases and in the callback event.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { TokenVerifier } from '../src/platform/oidc.ts';
import { Issuer, makeSigner, manualClock, type Signer } from './security-support.ts';
import {
  allAudit,
  buildGateway,
  captureLogs,
  deletePrefix,
  HANG_GUARD_MS,
  makeKeys,
  makePrefix,
  NEWS2_INSTANCE,
  NOTES,
  Receiver,
  type TestGateway,
  waitFor,
} from './support/index.ts';

const AUDIENCE = 'triage-test';

describe('bearer tokens (OpenID Connect / SMART on FHIR)', { timeout: HANG_GUARD_MS }, () => {
  const prefix = makePrefix('tokens');
  const keys = makeKeys();
  const clock = manualClock(Date.UTC(2026, 0, 1));
  const logs = captureLogs('info');
  let issuer: Issuer;
  let other: Issuer; // a second trusted issuer, down at first
  let rsa: Signer;
  let ec: Signer;
  let gw: TestGateway;
  let receiver: Receiver;

  const seconds = () => Math.floor(clock.now() / 1000);
  const token = (signer: Signer, claims: Record<string, unknown>, iss = issuer.url) =>
    signer.sign({ iss, aud: AUDIENCE, sub: 'prac-7', ...claims }, { issuedAt: seconds(), expiresIn: seconds() + 300 });

  before(async () => {
    issuer = await Issuer.start();
    other = await Issuer.start();
    rsa = await makeSigner('RS256');
    ec = await makeSigner('ES256');
    issuer.keys = [rsa.publicJwk, ec.publicJwk];
    other.keys = [rsa.publicJwk];
    other.down = true;
    const tokens = new TokenVerifier(
      [issuer, other].map((i, n) => ({
        id: n === 0 ? 'sso' : 'other',
        issuer: i.url,
        audience: AUDIENCE,
        algorithms: ['RS256', 'ES256'] as const,
        clockToleranceSeconds: 5,
        roleValues: { 'triage:client': 'client', 'triage:reviewer': 'reviewer', 'triage:admin': 'admin' } as const,
        modelsClaim: 'triage_models',
        nameClaim: 'name',
        jwksCacheSeconds: 600,
        jwksCooldownSeconds: 0,
      })),
      { now: clock.now, fetchTimeoutMs: 2000 },
    );
    receiver = await Receiver.start(keys.secrets.client);
    gw = await buildGateway({
      listen: true,
      prefix,
      keys,
      tokens,
      workers: ['inference', 'callbacks'],
      only: ['news2', 'note-triage', 'deterioration'],
      logger: logs.logger,
    });
  });

  after(async () => {
    await gw?.close();
    await receiver?.close();
    await issuer?.close();
    await other?.close();
    await deletePrefix(prefix);
  });

  test('a reviewer token opens the review queue; the JWKS is fetched once and cached', async () => {
    const t = await token(rsa, { scope: 'openid triage:reviewer', name: 'Dr Ada Lovelace' });
    for (let i = 0; i < 3; i++) assert.equal((await gw.call('GET', '/v1/reviews', t)).status, 200);
    const es = await token(ec, { scope: 'triage:reviewer' });
    assert.equal((await gw.call('GET', '/v1/reviews', es)).status, 200, 'ES256 keys of the same set verify too');
    assert.equal(issuer.discoveryFetches, 1);
    assert.equal(issuer.jwksFetches, 1);
  });

  test('roles and models come from scopes or claims', async () => {
    const client = await token(rsa, { scope: 'triage:client triage:model:news2' });
    const predict = (model: string, t: string) =>
      gw.call('POST', `/v1/models/${model}/predict`, t, { instances: [NEWS2_INSTANCE] });
    assert.equal((await predict('news2', client)).status, 200);
    const other = await predict('deterioration', client);
    assert.equal(other.status, 403);
    assert.equal(other.body.code, 'forbidden');
    const byClaim = await token(rsa, { scope: 'triage:client', triage_models: ['deterioration'] });
    assert.equal((await gw.call('GET', '/v1/models/deterioration', byClaim)).status, 200);
    const clientOnReviews = await gw.call('GET', '/v1/reviews', client);
    assert.equal(clientOnReviews.status, 403, 'a client token is no reviewer');
    const noRole = await gw.call('GET', '/v1/reviews', await token(rsa, { scope: 'openid profile' }));
    assert.equal(noRole.status, 403);
    assert.match(noRole.body.detail, /no Triage role/);
    const highest = await token(rsa, { scope: 'triage:client triage:admin' });
    assert.equal((await gw.call('GET', '/v1/audit', highest)).status, 200, 'the highest role granted wins');
  });

  test('expired, wrong audience, untrusted issuer, forged or unsigned tokens get 401 problem+json', async () => {
    const good = await token(rsa, { scope: 'triage:reviewer' });
    const cases: Array<[string, string]> = [
      [
        'wrong audience',
        await rsa.sign(
          { iss: issuer.url, aud: 'someone-else', sub: 'x', scope: 'triage:reviewer' },
          { issuedAt: seconds(), expiresIn: seconds() + 60 },
        ),
      ],
      ['untrusted issuer', await token(rsa, { scope: 'triage:reviewer' }, 'https://evil.example.org')],
      ['unpublished key', await token(await makeSigner('RS256'), { scope: 'triage:reviewer' })],
      ['tampered payload', tamper(good)],
      [
        'alg none',
        `${b64({ alg: 'none' })}.${b64({ iss: issuer.url, aud: AUDIENCE, sub: 'x', exp: seconds() + 60, scope: 'triage:admin' })}.`,
      ],
      [
        'no subject',
        await rsa.sign(
          { iss: issuer.url, aud: AUDIENCE, scope: 'triage:reviewer' },
          { issuedAt: seconds(), expiresIn: seconds() + 60 },
        ),
      ],
    ];
    for (const [what, t] of cases) {
      const res = await gw.call('GET', '/v1/reviews', t);
      assert.equal(res.status, 401, what);
      assert.equal(res.headers.get('content-type'), 'application/problem+json', what);
      assert.equal(res.body.code, 'unauthenticated', what);
    }
    clock.advance(306_000); // past exp + the 5 s tolerance
    const expired = await gw.call('GET', '/v1/reviews', good);
    assert.equal(expired.status, 401);
    assert.match(expired.headers.get('www-authenticate') ?? '', /error="invalid_token"/);
    assert.match(expired.body.detail, /expired/);
  });

  test('a rotated signing key is picked up without a restart; the retired key stops working', async () => {
    const before = issuer.jwksFetches;
    const retired = await token(rsa, { scope: 'triage:reviewer' });
    const next = await makeSigner('RS256');
    issuer.keys = [next.publicJwk, ec.publicJwk];
    assert.equal((await gw.call('GET', '/v1/reviews', await token(next, { scope: 'triage:reviewer' }))).status, 200);
    assert.equal(issuer.jwksFetches, before + 1, 'the unknown kid made it fetch the set again, once');
    // the cached set is the new one: the retired key's token no longer verifies
    assert.equal((await gw.call('GET', '/v1/reviews', retired)).status, 401);
  });

  test('an unreachable issuer gives 503 with Retry-After, and recovers without a restart', async () => {
    const t = await token(rsa, { scope: 'triage:reviewer' }, other.url);
    const down = await gw.call('GET', '/v1/reviews', t);
    assert.equal(down.status, 503);
    assert.equal(down.body.code, 'identity_provider_unavailable');
    assert.ok(down.headers.get('retry-after'));
    const fetchesWhileDown = other.discoveryFetches;
    other.down = false;
    assert.equal((await gw.call('GET', '/v1/reviews', t)).status, 503, 'not asked again before Retry-After');
    assert.equal(other.discoveryFetches, fetchesWhileDown);
    clock.advance(5000);
    assert.equal((await gw.call('GET', '/v1/reviews', t)).status, 200);
  });

  test('the person behind a token is recorded on the decision, in the audit and in the callback event', async () => {
    const submitted = await gw.call('POST', '/v1/models/note-triage/jobs', keys.client, {
      input: { text: NOTES.urgent },
      callbackUrl: receiver.url(),
    });
    assert.equal(submitted.status, 202);
    const id = submitted.body.id as string;
    await waitFor(
      async () => (await gw.call('GET', `/v1/jobs/${id}`, keys.client)).body?.state === 'awaiting_review',
      'hold',
    );
    const reviewer = await token(rsa.kid === issuer.keys[0]?.kid ? rsa : ec, {
      sub: 'practitioner-0042',
      name: 'Dr Ada Lovelace',
      scope: 'openid triage:reviewer triage:model:*',
    });
    const decided = await gw.call('POST', `/v1/reviews/${id}/decision`, reviewer, {
      decision: 'approve',
      reason: 'agree: urgent cardiology review',
    });
    assert.equal(decided.status, 200, decided.text);
    assert.equal(decided.body.decision.by, 'sso:practitioner-0042');
    assert.equal(decided.body.decision.byName, 'Dr Ada Lovelace');
    assert.equal(decided.body.decision.bySubject, 'practitioner-0042');
    const entry = (await allAudit(gw as never, keys.admin)).find(
      (e) => e.target === id && e.action === 'review.approve',
    );
    assert.equal(entry?.actor, 'sso:practitioner-0042');
    assert.equal(entry?.actorName, 'Dr Ada Lovelace');
    assert.equal(entry?.actorSubject, 'practitioner-0042');
    await waitFor(() => receiver.eventsFor(id).length > 0, 'the callback');
    const event = receiver.eventsFor(id)[0] as unknown as { data: { decision: { by: unknown } } };
    assert.deepEqual(event.data.decision.by, {
      id: 'sso:practitioner-0042',
      subject: 'practitioner-0042',
      name: 'Dr Ada Lovelace',
    });
  });

  test('a release by an admin token is audited with the person', async () => {
    const admin = await token(ec, { sub: 'admin-9', name: 'Grace Hopper', scope: 'triage:admin' });
    const res = await gw.call('PUT', '/v1/models/deterioration/routing/shadow', admin, {
      versions: [],
      reason: 'pause the comparison',
    });
    assert.equal(res.status, 200, res.text);
    const entry = (await allAudit(gw as never, keys.admin)).find((e) => e.action === 'release.shadow');
    assert.equal(entry?.actorName, 'Grace Hopper');
    assert.equal(entry?.actor, 'sso:admin-9');
  });

  test('tokens never reach the log', () => {
    const text = logs.lines.join('\n');
    assert.ok(logs.lines.length > 10, 'the access log was written');
    assert.doesNotMatch(text, /eyJ[A-Za-z0-9_-]{10,}/);
  });
});

function b64(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

/** The same signature over a payload that now claims the admin role. */
function tamper(jwt: string): string {
  const [header, payload, signature] = jwt.split('.');
  const claims = JSON.parse(Buffer.from(payload as string, 'base64url').toString());
  return `${header}.${b64({ ...claims, scope: 'triage:admin' })}.${signature}`;
}
