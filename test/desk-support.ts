/**
 * The review desk's tests: a gateway on a real socket (the desk's cookies and forms need one), holds submitted
 * through the API, and a small cookie-keeping client for the HTTP-level checks.
 */
import assert from 'node:assert/strict';
import { ASYNC_WORKERS, buildGateway, type TestGateway, type TestKeys, waitForState } from './support/index.ts';

/** The one test gateway on a real socket, with the async workers in process. */
export type DeskGateway = TestGateway;

export function deskGateway(prefix: string, keys: TestKeys, also: string[] = []): Promise<DeskGateway> {
  return buildGateway({
    prefix,
    keys,
    only: ['note-triage', 'similar-cases', ...also],
    workers: ASYNC_WORKERS,
    listen: true,
  });
}

/** A note as a FHIR DocumentReference with a base64 attachment: what the desk must decode for the reviewer. */
export const documentInput = (text: string) => ({
  document: {
    resourceType: 'DocumentReference',
    status: 'current',
    content: [{ attachment: { contentType: 'text/plain', data: Buffer.from(text).toString('base64') } }],
  },
});

export async function submitHeld(
  gw: TestGateway,
  key: string,
  input: unknown,
  callbackUrl?: string,
  model = 'note-triage',
): Promise<string> {
  const res = await gw.call('POST', `/v1/models/${model}/jobs`, key, {
    input,
    ...(callbackUrl ? { callbackUrl } : {}),
  });
  assert.equal(res.status, 202, res.text);
  await waitForState(gw, key, res.body.id, 'awaiting_review');
  return res.body.id;
}

/** A browser-like client: keeps the session cookie, sends forms with this site's Origin, never follows redirects. */
export class FormClient {
  cookie = '';
  constructor(readonly base: string) {}

  async request(method: string, path: string, form?: Record<string, string>, headers: Record<string, string> = {}) {
    const res = await fetch(`${this.base}${path}`, {
      method,
      redirect: 'manual',
      headers: {
        ...(this.cookie ? { cookie: this.cookie } : {}),
        ...(form ? { 'content-type': 'application/x-www-form-urlencoded', origin: this.base } : {}),
        ...headers,
      },
      ...(form ? { body: new URLSearchParams(form).toString() } : {}),
    });
    const set = res.headers.get('set-cookie');
    if (set) this.cookie = set.split(';')[0] ?? '';
    return { status: res.status, headers: res.headers, text: await res.text() };
  }

  /** the session's CSRF token, read from a page's form as a browser would */
  static csrfOf(html: string): string {
    const m = /name="csrf" value="([^"]+)"/.exec(html);
    assert.ok(m, 'the page has a CSRF token');
    return m[1] as string;
  }
}
