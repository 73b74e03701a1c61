import type { Context } from 'hono';
import { secureHeaders } from 'hono/secure-headers';
import type { AppEnv } from '../context.ts';

/**
 * Response headers for an API that answers with patient data. Nothing here is meant for a browser to render or a
 * cache to keep: `no-store` because a job, review or audit page left in a shared proxy or disk cache is a disclosure;
 * `nosniff` and a `default-src 'none'` policy so a body can never be run as script or framed.
 */
const options: NonNullable<Parameters<typeof secureHeaders>[0]> = {
  xFrameOptions: 'DENY',
  contentSecurityPolicy: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] },
  crossOriginEmbedderPolicy: false,
};

/**
 * The headers of a response built on @hono/node-server's fast path (predict, problems, FHIR reads), as a plain record:
 * touching `c.res.headers` there would turn each into a full WHATWG Response. Written as one object literal on
 * purpose: spreading a 13-key constant into a literal and adding keys took V8's slow path, about 12 µs per response
 * (a tenth of a bedside request's CPU); a literal costs 0.05 µs, and callers add their own keys by assignment.
 */
export function secureHeaderRecord(contentType: string, requestId: string): Record<string, string> {
  return {
    'cache-control': 'no-store',
    'content-security-policy': "default-src 'none'; frame-ancestors 'none'",
    'cross-origin-opener-policy': 'same-origin',
    'cross-origin-resource-policy': 'same-origin',
    'origin-agent-cluster': '?1',
    'referrer-policy': 'no-referrer',
    'strict-transport-security': 'max-age=15552000; includeSubDomains',
    'x-content-type-options': 'nosniff',
    'x-dns-prefetch-control': 'off',
    'x-download-options': 'noopen',
    'x-frame-options': 'DENY',
    'x-permitted-cross-domain-policies': 'none',
    'x-xss-protection': '0',
    'content-type': contentType,
    'x-request-id': requestId,
  };
}

/**
 * The security headers alone (what `secureHeaderRecord` adds besides the content type and request id). The
 * secure-headers test checks that these and what the middleware sets never drift apart.
 */
export const SECURE_HEADERS: Readonly<Record<string, string>> = (() => {
  const { 'content-type': _type, 'x-request-id': _id, ...security } = secureHeaderRecord('', '');
  return Object.freeze(security);
})();

/**
 * Hono's secure-headers middleware applied to a response a handler produced, plus `no-store` unless the handler chose
 * its own caching. The app's outermost middleware calls it for every response except those that carry SECURE_HEADERS
 * themselves (they say so through `requestIdSent`). A route may relax the policy for itself through
 * `contentSecurityPolicy` (the API reference page runs the renderer's scripts).
 */
export function secureResponseHeaders(): (c: Context<AppEnv>) => Promise<void> {
  const hono = secureHeaders(options);
  const done = async () => {};
  return async (c) => {
    // a no-op `next` makes the middleware only set headers on the response already there
    await hono(c, done);
    const csp = c.get('contentSecurityPolicy');
    if (csp) c.res.headers.set('content-security-policy', csp);
    if (!c.res.headers.has('cache-control')) c.res.headers.set('cache-control', 'no-store');
  };
}
