/**
 * The review desk over HTTP: the session cookie (HttpOnly, SameSite=Strict, signed, short), the pages' CSP and
 * no-store, CSRF refusals, roles, forged cookies, the model filter, escalated holds first, and an amendment's unknown
 * field refused with a clear message through the same service as the API.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type DeskGateway, deskGateway, FormClient, submitHeld } from './desk-support.ts';
import { deletePrefix, makeKeys, makePrefix, NOTES } from './support/index.ts';

const keys = makeKeys();
const prefix = makePrefix('desk');
let gw: DeskGateway;

before(async () => {
  gw = await deskGateway(prefix, keys);
});
after(async () => {
  await gw?.close();
  await deletePrefix(prefix);
});

async function signedIn(key = keys.reviewer): Promise<FormClient> {
  const client = new FormClient(gw.url);
  const res = await client.request('POST', '/desk/sign-in', { credential: key });
  assert.equal(res.status, 303, res.text);
  return client;
}

describe('sessions', () => {
  test('a reviewer key signs in to a short, signed, HttpOnly, SameSite=Strict cookie that carries no key', async () => {
    const client = new FormClient(gw.url);
    const res = await client.request('POST', '/desk/sign-in', { credential: keys.reviewer });
    assert.equal(res.status, 303);
    assert.equal(res.headers.get('location'), '/desk/reviews');
    const cookie = res.headers.get('set-cookie') ?? '';
    assert.match(cookie, /HttpOnly/);
    assert.match(cookie, /SameSite=Strict/);
    assert.match(cookie, /Max-Age=900/);
    assert.match(cookie, /Path=\/desk/);
    assert.doesNotMatch(cookie, /Secure/, 'plain http on loopback: no Secure flag');
    assert.equal(cookie.includes(keys.reviewer), false);
    const page = await client.request('GET', '/desk/reviews');
    assert.equal(page.status, 200);
    assert.match(page.text, /Signed in as reviewer/);
  });

  test('a wrong key, a client key and no cookie get no session', async () => {
    const client = new FormClient(gw.url);
    const wrong = await client.request('POST', '/desk/sign-in', { credential: 'trg_nope' });
    assert.equal(wrong.status, 401);
    assert.match(wrong.text, /role="alert"/);
    const clientKey = await client.request('POST', '/desk/sign-in', { credential: keys.client });
    assert.equal(clientKey.status, 403);
    assert.equal(client.cookie, '');
    const anon = await client.request('GET', '/desk/reviews');
    assert.equal(anon.status, 303);
    assert.equal(anon.headers.get('location'), '/desk/sign-in');
  });

  test('a form past the size limit is a 413 (declared or streamed), a malformed multipart form a 400, never a 500', async () => {
    const max = gw.deps.options.maxBodyBytes;
    const form = `credential=${keys.reviewer}&pad=${'x'.repeat(max)}`;
    const post = (body: BodyInit, type: string) =>
      fetch(`${gw.url}/desk/sign-in`, {
        method: 'POST',
        redirect: 'manual',
        headers: { 'content-type': type, origin: gw.url },
        body,
        ...(body instanceof ReadableStream ? { duplex: 'half' } : {}),
      } as RequestInit);
    const urlencoded = 'application/x-www-form-urlencoded';
    const declared = await post(form, urlencoded);
    assert.equal(declared.status, 413, await declared.text());
    const streamed = await post(
      new ReadableStream({
        start(controller) {
          controller.enqueue(new TextEncoder().encode(form));
          controller.close();
        },
      }),
      urlencoded,
    );
    assert.equal(streamed.status, 413, await streamed.text());
    for (const res of [declared, streamed]) assert.equal(res.headers.get('set-cookie'), null, 'no session');
    const multipart = await post(
      '--zz\r\nContent-Disposition: form-data; name="credential"\r\n\r\nabc',
      'multipart/form-data; boundary=zz',
    );
    assert.equal(multipart.status, 400, await multipart.text());
  });

  test('an altered cookie is no session', async () => {
    const client = await signedIn();
    const [name, value] = client.cookie.split('=') as [string, string];
    const decoded = decodeURIComponent(value);
    const [payload, sig] = decoded.split('.') as [string, string];
    const session = JSON.parse(Buffer.from(payload, 'base64url').toString());
    session.role = 'admin';
    client.cookie = `${name}=${encodeURIComponent(`${Buffer.from(JSON.stringify(session)).toString('base64url')}.${sig}`)}`;
    const res = await client.request('GET', '/desk/reviews');
    assert.equal(res.status, 303);
  });
});

describe('pages', () => {
  test('a CSP that allows only the desk’s own script and style, and no-store', async () => {
    const client = await signedIn();
    const res = await client.request('GET', '/desk/reviews');
    const csp = res.headers.get('content-security-policy') ?? '';
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.match(csp, /form-action 'self'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.match(res.headers.get('content-type') ?? '', /text\/html/);
    assert.doesNotMatch(res.text, /<script>|style="/, 'no inline script or style');
    // the API keeps its own, stricter policy
    const api = await gw.call('GET', '/v1/reviews', keys.reviewer);
    assert.equal(api.headers.get('content-security-policy'), "default-src 'none'; frame-ancestors 'none'");
  });

  test('CSRF: a decision without the form token, or from another origin, is refused and nothing is decided', async () => {
    const id = await submitHeld(gw, keys.client, { text: NOTES.none });
    const client = await signedIn();
    const page = await client.request('GET', `/desk/reviews/${id}`);
    const csrf = FormClient.csrfOf(page.text);
    const form = { decision: 'approve', reason: 'fine' };
    const missing = await client.request('POST', `/desk/reviews/${id}`, form);
    assert.equal(missing.status, 403);
    const foreign = await client.request(
      'POST',
      `/desk/reviews/${id}`,
      { ...form, csrf },
      { origin: 'https://evil.example' },
    );
    assert.equal(foreign.status, 403);
    assert.equal((await gw.call('GET', `/v1/reviews/${id}`, keys.reviewer)).body.state, 'awaiting_review');
    const ok = await client.request('POST', `/desk/reviews/${id}`, { ...form, csrf });
    assert.equal(ok.status, 303, ok.text);
    const decided = await gw.call('GET', `/v1/reviews/${id}`, keys.reviewer);
    assert.equal(decided.body.decision.by, 'reviewer', 'the same service and identity as the API');
  });

  test('an amendment with a field the model does not produce is refused with a clear message', async () => {
    const id = await submitHeld(gw, keys.client, { text: NOTES.routine });
    const client = await signedIn();
    const csrf = FormClient.csrfOf((await client.request('GET', `/desk/reviews/${id}`)).text);
    const res = await client.request('POST', `/desk/reviews/${id}`, {
      csrf,
      decision: 'amend',
      reason: 'r',
      'output.category': 'no-action',
      'output.comment': 'see GP',
    });
    assert.equal(res.status, 400);
    assert.match(res.text, /&quot;comment&quot; not in this model&#39;s output|"comment" not in this model's output/);
    assert.equal((await gw.call('GET', `/v1/reviews/${id}`, keys.reviewer)).body.state, 'awaiting_review');
  });

  test('escalated holds come first; the model filter shows one model', async () => {
    const older = await submitHeld(gw, keys.client, { text: NOTES.urgent });
    const escalated = await submitHeld(gw, keys.client, { text: NOTES.none });
    await gw.gateway.services.store.escalate(escalated);
    const client = await signedIn();
    const all = await client.request('GET', '/desk/reviews?model=note-triage');
    const order = [...all.text.matchAll(/<tr data-id="([^"]+)"/g)].map((m) => m[1]);
    assert.equal(order[0], escalated, 'escalated first, though newer and predicted no-action');
    assert.ok(order.includes(older));
    assert.match(all.text, /<option value="note-triage" selected="">/);
    const other = await client.request('GET', '/desk/reviews?model=similar-cases');
    assert.equal([...other.text.matchAll(/<tr data-id=/g)].length, 0);
  });
});
