import { randomUUID } from 'node:crypto';
import type { Context, MiddlewareHandler } from 'hono';
import type { AppDeps, AppEnv } from '../context.ts';
import { assertRole, keyFromHeaders, type Principal, type Role } from './auth.ts';
import { Problem } from './errors.ts';
import { assertJsonDepth } from './json-body.ts';
import { endpointClass, rateLimitHeaders, refusal } from './rate-limit.ts';
import { secureHeaderRecord } from './secure-headers.ts';

/**
 * A caller's request id is taken only as a UUID: anything freer is where integrations put an MRN or an encounter
 * number, and the request id goes into every log line. Otherwise the gateway makes its own.
 */
const SAFE_REQUEST_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The request id a response carries: the caller's `x-request-id` when it is a UUID, else a new one. */
export function requestIdOf(header: string | string[] | undefined): string {
  return typeof header === 'string' && SAFE_REQUEST_ID.test(header) ? header.toLowerCase() : randomUUID();
}

/** Renders a Problem as RFC 9457 problem+json. */
export function problemResponse(c: Context<AppEnv>, problem: Problem): Response {
  c.set('requestIdSent', true);
  const body = problem.toBody(c.req.path);
  const headers = secureHeaderRecord('application/problem+json', c.get('requestId') ?? '');
  for (const name in problem.headers) headers[name] = problem.headers[name] as string;
  return new Response(JSON.stringify({ ...body, requestId: c.get('requestId') }), { status: problem.status, headers });
}

/**
 * 401 without a valid key or token, 403 when its role is not among `roles` (admins pass), 429 past the client's rate
 * limit, or from an address with too many failed authentications (refused before its credential is even looked at).
 */
export function requireRole(deps: AppDeps, ...roles: Role[]): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const limiter = deps.limiter;
    const address = limiter?.addressOf(c);
    if (limiter && address) limiter.assertNotBlocked(address);
    const credential = keyFromHeaders(c.req.header('authorization'), c.req.header('x-api-key'));
    let principal: Principal;
    try {
      const identified = identify(deps, credential);
      // an API key is known at once: no await (a microtask per request) unless a token needs verifying
      principal = identified instanceof Promise ? await identified : identified;
    } catch (err) {
      // only presented credentials count: a request without one costs nothing to refuse
      if (limiter && address && credential && err instanceof Problem && err.code === 'unauthenticated') {
        throw (await limiter.authFailed(address)) ?? err;
      }
      throw err;
    }
    if (limiter) {
      const cls = endpointClass(c.req.method, c.req.path, c.req.header('prefer'));
      const taken = limiter.take(principal, cls);
      const decision = taken instanceof Promise ? await taken : taken;
      if (decision && !decision.allowed) throw refusal(decision, `over the ${cls} limit of this client: slow down`);
      // predict answers build their own response on the fast path: the fields would be lost there, so only the
      // other classes carry them on success (every 429 carries them)
      if (decision && cls !== 'predict') {
        const fields = rateLimitHeaders(decision);
        c.set('rateLimitHeaders', fields); // a fast-path answer (a job's 202) carries them itself
        for (const [k, v] of Object.entries(fields)) c.header(k, v);
      }
    }
    assertRole(principal, roles);
    c.set('principal', principal);
    await next();
  };
}

function identify(deps: AppDeps, credential: string | undefined): Principal | Promise<Principal> {
  if (!credential) {
    throw new Problem('unauthenticated', 'send an API key or bearer token as "Authorization: Bearer <credential>"', {
      headers: { 'www-authenticate': 'Bearer realm="triage"' },
    });
  }
  const byKey = deps.keys.authenticate(credential);
  if (byKey) return byKey;
  if (deps.tokens?.accepts(credential)) return deps.tokens.verify(credential);
  throw new Problem('unauthenticated', 'the API key is not valid', {
    headers: { 'www-authenticate': 'Bearer realm="triage"' },
  });
}

const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;

/**
 * Reads a JSON body: 415 for another media type, 413 past the size limit, 400 for malformed JSON. A declared
 * Content-Length is checked before reading (Node's parser holds the body to it) and the body is then read on the
 * server's fast path; a chunked body is read through a capped stream. (Hono's bodyLimit middleware turns every request
 * into a full WHATWG Request with a stream: it cost three quarters of the gateway's throughput.)
 */
export async function readJson(c: Context<AppEnv>): Promise<unknown> {
  const type = c.req.header('content-type');
  if (!type || !JSON_TYPE.test(type)) {
    throw new Problem(
      'unsupported_media_type',
      `content-type must be application/json, got ${type ? 'another type' : 'none'}`,
    );
  }
  const max = c.get('maxBodyBytes');
  let text: string;
  if (assertDeclaredLength(c) !== undefined) {
    text = await c.req.text();
    // app.request() and other in-process callers are not held to the declared length by Node's parser
    if (text.length > max) throw tooLarge(max);
  } else {
    text = await readCapped(c.req.raw.body, max, () => tooLarge(max));
  }
  assertJsonDepth(text);
  try {
    return JSON.parse(text);
  } catch {
    throw new Problem('malformed_json', 'the body is not valid JSON');
  }
}

/** The refusal of a body past the size limit. */
export function tooLarge(max: number): Problem {
  return new Problem('payload_too_large', `the body exceeds ${max} bytes`);
}

/**
 * The declared Content-Length of a body, checked before any of it is read: 400 when it is not a number, 413 past the
 * size limit at once (a client that declares more than it sends would otherwise be waited for, and answered by
 * nothing but Node's request timeout). Every route that reads a body calls it first.
 */
export function assertDeclaredLength(c: Context<AppEnv>): number | undefined {
  const declared = c.req.header('content-length');
  if (declared === undefined) return undefined;
  if (!/^\d{1,15}$/.test(declared)) throw new Problem('invalid_header', 'content-length must be a number');
  const length = Number(declared);
  if (length > c.get('maxBodyBytes')) throw tooLarge(c.get('maxBodyBytes'));
  return length;
}

export async function readCapped(
  body: ReadableStream<Uint8Array> | null,
  max: number,
  tooLarge: () => Problem,
): Promise<string> {
  if (!body) return '';
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel().catch(() => {});
      throw tooLarge();
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}
