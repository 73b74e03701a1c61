import type { Context, MiddlewareHandler } from 'hono';
import { assertRole, keyFromHeaders, type Role } from './auth.ts';
import type { AppDeps, AppEnv } from './context.ts';
import { Problem } from './errors.ts';

/** Renders a Problem as RFC 9457 problem+json. */
export function problemResponse(c: Context<AppEnv>, problem: Problem): Response {
  const body = problem.toBody(c.req.path);
  return new Response(JSON.stringify({ ...body, requestId: c.get('requestId') }), {
    status: problem.status,
    headers: {
      'content-type': 'application/problem+json',
      'x-request-id': c.get('requestId') ?? '',
      'cache-control': 'no-store',
      ...problem.headers,
    },
  });
}

/** 401 without a valid key, 403 when the key's role is not among `roles` (admins pass). */
export function requireRole(deps: AppDeps, ...roles: Role[]): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const key = keyFromHeaders(c.req.header('authorization'), c.req.header('x-api-key'));
    const principal = deps.keys.authenticate(key);
    if (!principal) {
      throw new Problem(
        'unauthenticated',
        key ? 'the API key is not valid' : 'send the API key as "Authorization: Bearer <key>"',
        {
          headers: { 'www-authenticate': 'Bearer realm="triage"' },
        },
      );
    }
    assertRole(principal, roles);
    c.set('principal', principal);
    await next();
  };
}

const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\s*(?:;|$)/i;

/** Reads a JSON body: 415 for another media type, 400 for malformed JSON. Size is capped by the bodyLimit middleware. */
export async function readJson(c: Context<AppEnv>): Promise<unknown> {
  const type = c.req.header('content-type');
  if (!type || !JSON_TYPE.test(type)) {
    throw new Problem(
      'unsupported_media_type',
      `content-type must be application/json, got ${type ? 'another type' : 'none'}`,
    );
  }
  const text = await c.req.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Problem('malformed_json', 'the body is not valid JSON');
  }
}
