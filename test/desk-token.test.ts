/**
 * A person signs in to the review desk with a bearer token (OpenID Connect), and their decision carries their name
 * and subject, as one made through the API does; a token without the reviewer role opens no session.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { TokenVerifier } from '../src/platform/oidc.ts';
import { FormClient, submitHeld } from './desk-support.ts';
import { Issuer, makeSigner, type Signer } from './security-support.ts';
import { buildGateway, deletePrefix, makeKeys, makePrefix, NOTES, type TestGateway } from './support/index.ts';

const keys = makeKeys();
const prefix = makePrefix('desk-token');
let issuer: Issuer;
let signer: Signer;
let gw: TestGateway;

before(async () => {
  issuer = await Issuer.start();
  signer = await makeSigner('RS256');
  issuer.keys = [signer.publicJwk];
  const tokens = new TokenVerifier(
    [
      {
        id: 'sso',
        issuer: issuer.url,
        audience: 'triage',
        algorithms: ['RS256'] as const,
        clockToleranceSeconds: 5,
        roleValues: { 'triage:client': 'client', 'triage:reviewer': 'reviewer', 'triage:admin': 'admin' } as const,
        modelsClaim: 'triage_models',
        nameClaim: 'name',
        jwksCacheSeconds: 600,
        jwksCooldownSeconds: 0,
      },
    ],
    { now: Date.now, fetchTimeoutMs: 2000 },
  );
  gw = await buildGateway({ prefix, keys, tokens, workers: ['inference'], only: ['note-triage'], listen: true });
});
after(async () => {
  await gw?.close();
  await issuer?.close();
  await deletePrefix(prefix);
});

const token = (scope: string) =>
  signer.sign({ iss: issuer.url, aud: 'triage', sub: 'prac-42', scope, name: 'Dr Ada Lovelace' }, { expiresIn: '5m' });

test('a reviewer token signs in; the decision records the person; a client token does not sign in', async () => {
  const id = await submitHeld(gw, keys.client, { text: NOTES.urgent });
  const refused = new FormClient(gw.url);
  assert.equal(
    (await refused.request('POST', '/desk/sign-in', { credential: await token('triage:client') })).status,
    403,
  );

  const client = new FormClient(gw.url);
  const res = await client.request('POST', '/desk/sign-in', {
    credential: await token('openid triage:reviewer triage:model:*'),
  });
  assert.equal(res.status, 303, res.text);
  const page = await client.request('GET', `/desk/reviews/${id}`);
  assert.match(page.text, /Signed in as Dr Ada Lovelace/);
  const csrf = FormClient.csrfOf(page.text);
  const done = await client.request('POST', `/desk/reviews/${id}`, { csrf, decision: 'approve', reason: 'agree' });
  assert.equal(done.status, 303, done.text);
  const decision = (await gw.call('GET', `/v1/reviews/${id}`, keys.reviewer)).body.decision;
  assert.equal(decision.by, 'sso:prac-42');
  assert.equal(decision.bySubject, 'prac-42');
  assert.equal(decision.byName, 'Dr Ada Lovelace');
});
