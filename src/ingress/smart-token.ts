import { randomUUID } from 'node:crypto';
import { importJWK, importPKCS8, SignJWT } from 'jose';
import type { FhirServer, SmartAuth } from './fhir-servers.ts';

/** A failed step of talking to a FHIR server; `permanent` when asking again cannot help (a 4xx, a bad key). */
export class IngressError extends Error {
  override name = 'IngressError';
  readonly step: 'configuration' | 'token' | 'kick-off' | 'status' | 'download';
  readonly permanent: boolean;
  constructor(step: IngressError['step'], message: string, permanent: boolean) {
    super(`FHIR export step "${step}" failed: ${message}`);
    this.step = step;
    this.permanent = permanent;
  }
}

/** Token answers are reused until this long before they expire, so a token never lapses mid-request. */
const EXPIRY_MARGIN_MS = 30_000;

/**
 * Access tokens for one server. SMART Backend Services: a client-assertion JWT (RFC 7523) signed with the client's
 * private key, exchanged at the token endpoint for an access token that is reused until shortly before it expires.
 * A static bearer token is handed out as configured. Tokens are never logged or put in an error message.
 */
export class TokenSource {
  readonly #server: FhirServer;
  readonly #now: () => number;
  #cached: { token: string; until: number } | undefined;
  #pending: Promise<string> | undefined;
  #key: Promise<CryptoKey | Uint8Array> | undefined;

  constructor(server: FhirServer, now: () => number = Date.now) {
    this.#server = server;
    this.#now = now;
  }

  /** The token to send, or undefined for a server without auth. */
  async get(): Promise<string | undefined> {
    const { auth } = this.#server;
    if (auth.kind === 'none') return undefined;
    if (auth.kind === 'bearer') return auth.token;
    if (this.#cached && this.#now() < this.#cached.until) return this.#cached.token;
    // one exchange at a time: concurrent downloads share it
    this.#pending ??= this.#exchange(auth).finally(() => {
      this.#pending = undefined;
    });
    return this.#pending;
  }

  /** Forgets a token the server refused (revoked, or expired early): the next `get` asks for a new one. */
  invalidate(): void {
    this.#cached = undefined;
  }

  async #signingKey(auth: SmartAuth): Promise<CryptoKey | Uint8Array> {
    this.#key ??= (async () => {
      const text = auth.privateKey.trim();
      return text.startsWith('{') ? importJWK(JSON.parse(text), auth.algorithm) : importPKCS8(text, auth.algorithm);
    })();
    return this.#key.catch(() => {
      this.#key = undefined;
      throw new IngressError('token', 'the configured private key cannot be read', true);
    });
  }

  async #exchange(auth: SmartAuth): Promise<string> {
    const key = await this.#signingKey(auth);
    const now = Math.floor(this.#now() / 1000);
    const assertion = await new SignJWT({})
      .setProtectedHeader({ alg: auth.algorithm, kid: auth.keyId, typ: 'JWT' })
      .setIssuer(auth.clientId)
      .setSubject(auth.clientId)
      .setAudience(auth.tokenUrl)
      .setJti(randomUUID())
      .setIssuedAt(now)
      .setExpirationTime(now + 300) // the SMART limit: no more than five minutes
      .sign(key);
    const body = new URLSearchParams({
      grant_type: 'client_credentials',
      scope: auth.scope,
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: assertion,
    });
    let res: Response;
    try {
      res = await fetch(auth.tokenUrl, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body,
        redirect: 'error',
        signal: AbortSignal.timeout(30_000),
      });
    } catch (err) {
      throw new IngressError('token', `the token endpoint cannot be reached (${(err as Error).name})`, false);
    }
    const json = (await res.json().catch(() => undefined)) as
      | { access_token?: unknown; expires_in?: unknown; error?: unknown }
      | undefined;
    if (!res.ok || typeof json?.access_token !== 'string') {
      // the OAuth error code (invalid_client, invalid_scope, …) says why; error_description may echo our input
      const code = typeof json?.error === 'string' ? ` (${json.error.slice(0, 64)})` : '';
      throw new IngressError('token', `the token endpoint answered ${res.status}${code}`, res.status < 500);
    }
    // without expires_in a token is used for one export step at a time: a minute is a cautious guess
    const lifetime = typeof json.expires_in === 'number' && json.expires_in > 0 ? json.expires_in * 1000 : 60_000;
    this.#cached = { token: json.access_token, until: this.#now() + Math.max(0, lifetime - EXPIRY_MARGIN_MS) };
    return json.access_token;
  }
}
