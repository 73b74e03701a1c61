import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Context } from 'hono';
import { deleteCookie, getSignedCookie, setSignedCookie } from 'hono/cookie';
import type { AppDeps, AppEnv } from '../context.ts';
import { assertRole, type Principal } from '../platform/auth.ts';
import { Problem } from '../platform/errors.ts';

export const SESSION_COOKIE = 'triage_desk';
/** Short: a revoked key or a person who left stops deciding within this, without a session store to purge. */
export const SESSION_SECONDS = 15 * 60;

/** What the signed cookie carries: who signed in and the form token; never the key or the token itself. */
interface Session {
  id: string;
  role: Principal['role'];
  via?: Principal['via'];
  subject?: string;
  name?: string;
  models: string[];
  csrf: string;
  exp: number;
}

export interface DeskSession {
  principal: Principal;
  csrf: string;
}

/** A reviewer key or a person's bearer token → a principal, through the same checks as the API's. */
export async function signIn(deps: AppDeps, c: Context<AppEnv>, credential: string, secret: string): Promise<void> {
  const limiter = deps.limiter;
  const address = limiter?.addressOf(c);
  if (limiter && address) limiter.assertNotBlocked(address);
  let principal = deps.keys.authenticate(credential);
  if (!principal && deps.tokens?.accepts(credential)) {
    try {
      principal = await deps.tokens.verify(credential);
    } catch (err) {
      if (!(err instanceof Problem) || err.code !== 'unauthenticated') throw err;
    }
  }
  if (!principal) {
    // a wrong key through the page counts against the address exactly as it does on the API
    if (limiter && address) throw (await limiter.authFailed(address)) ?? unauthenticated();
    throw unauthenticated();
  }
  assertRole(principal, ['reviewer']);
  const session: Session = {
    id: principal.id,
    role: principal.role,
    ...(principal.via ? { via: principal.via } : {}),
    ...(principal.subject !== undefined ? { subject: principal.subject } : {}),
    ...(principal.name !== undefined ? { name: principal.name } : {}),
    models: [...principal.models],
    csrf: randomBytes(24).toString('base64url'),
    exp: Math.floor(Date.now() / 1000) + SESSION_SECONDS,
  };
  await setSignedCookie(c, SESSION_COOKIE, Buffer.from(JSON.stringify(session)).toString('base64url'), secret, {
    httpOnly: true,
    secure: new URL(c.req.url).protocol === 'https:',
    sameSite: 'Strict',
    path: '/desk',
    maxAge: SESSION_SECONDS,
  });
}

const unauthenticated = () => new Problem('unauthenticated', 'that key or token is not valid');

export function signOut(c: Context<AppEnv>): void {
  deleteCookie(c, SESSION_COOKIE, { path: '/desk' });
}

/** The signed-in reviewer, or undefined: a forged, altered or expired cookie is no session. */
export async function currentSession(c: Context<AppEnv>, secret: string): Promise<DeskSession | undefined> {
  const raw = await getSignedCookie(c, secret, SESSION_COOKIE);
  if (!raw) return undefined;
  let s: Session;
  try {
    s = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8')) as Session;
  } catch {
    return undefined;
  }
  if (typeof s.exp !== 'number' || s.exp * 1000 <= Date.now()) return undefined;
  const principal: Principal = {
    id: s.id,
    role: s.role,
    models: new Set(s.models),
    callbackHosts: [],
    ...(s.via ? { via: s.via } : {}),
    ...(s.subject !== undefined ? { subject: s.subject } : {}),
    ...(s.name !== undefined ? { name: s.name } : {}),
  };
  return { principal, csrf: s.csrf };
}

/**
 * CSRF: a form must carry the session's token, and the browser's Origin (sent on every POST) must be this site.
 * SameSite=Strict already keeps the cookie off cross-site requests; these hold where a browser does not.
 */
export function assertSameSiteForm(c: Context<AppEnv>, sessionToken: string | undefined, formToken: unknown): void {
  const origin = c.req.header('origin');
  if (origin !== undefined && origin !== new URL(c.req.url).origin) {
    throw new Problem('forbidden', 'this form was sent from another site');
  }
  if (sessionToken === undefined) return;
  const a = Buffer.from(String(formToken ?? ''));
  const b = Buffer.from(sessionToken);
  if (a.length !== b.length || !timingSafeEqual(a, b)) {
    throw new Problem('forbidden', 'the form has expired: reload the page and decide again');
  }
}
