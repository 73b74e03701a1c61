import { createHash } from 'node:crypto';
import { createRemoteJWKSet, decodeJwt, errors, type JWTPayload, jwtVerify } from 'jose';
import YAML from 'yaml';
import { z } from 'zod';
import { type Principal, type Role, roles } from './auth.ts';
import { ConfigError, isLoopback } from './config.ts';
import { Problem } from './errors.ts';
import { rateLimitsSchema } from './rate-limit.ts';

/**
 * Bearer tokens of people: OpenID Connect / SMART on FHIR access tokens (JWTs) from configured issuers. Signatures
 * are checked against each issuer's JWKS (fetched on first use, cached, fetched again for an unknown `kid` so key
 * rotation needs no restart); issuer, audience, expiry and not-before are checked; the role and the models come from
 * scopes or claims; the subject and display name become the principal's identity.
 */

const ID = /^[A-Za-z0-9._-]{1,64}$/;
const algorithms = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;

/** https, or plain http to a loopback host (a test or a sidecar): keys fetched in clear could be swapped. */
export const keyUrl = z.url().refine((u) => {
  const url = new URL(u);
  return url.protocol === 'https:' || (url.protocol === 'http:' && isLoopback(url.hostname));
}, 'must be an https URL (plain http only to loopback)');

const issuerSchema = z
  .object({
    /** short name: token principals are `<id>:<subject>` in audit records and job ownership */
    id: z.string().regex(ID, 'must be 1-64 of letters, digits, . _ -'),
    /** the exact `iss` of its tokens */
    issuer: keyUrl,
    audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
    /** without it, read from the issuer's /.well-known/openid-configuration */
    jwksUri: keyUrl.optional(),
    algorithms: z.array(z.enum(algorithms)).min(1).default(['RS256', 'ES256']),
    clockToleranceSeconds: z.number().int().min(0).max(300).default(5),
    /** a claim holding role names (dotted path, e.g. `realm_access.roles`); scopes are always read too */
    rolesClaim: z.string().min(1).optional(),
    /** scope or role-claim value → Triage role; the highest role granted wins */
    roleValues: z
      .record(z.string().min(1), z.enum(roles))
      .default({ 'triage:client': 'client', 'triage:reviewer': 'reviewer', 'triage:admin': 'admin' }),
    /** a claim listing the models a client may call (array or space-separated); scopes `triage:model:<name>` too */
    modelsClaim: z.string().min(1).default('triage_models'),
    nameClaim: z.string().min(1).default('name'),
    /** limits for this issuer's people, over the TRIAGE_RATE_LIMIT_* defaults */
    rateLimits: rateLimitsSchema.optional(),
    jwksCacheSeconds: z.number().int().min(1).max(86_400).default(600),
    /** at most one JWKS fetch this often for unknown key ids (a flood of forged kids cannot hammer the issuer) */
    jwksCooldownSeconds: z.number().int().min(0).max(3600).default(30),
  })
  .strict();
export type IssuerConfig = z.infer<typeof issuerSchema>;
const issuersFileSchema = z.object({ issuers: z.array(issuerSchema).min(1) }).strict();

const MAX_TOKEN_LENGTH = 16 * 1024;
const JWT_SHAPE = /^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/;
const MODEL_SCOPE = 'triage:model:';
const rank: Record<Role, number> = { client: 1, reviewer: 2, approver: 3, admin: 4 };

type Jwks = ReturnType<typeof createRemoteJWKSet>;
/** an issuer, its key set once fetched, and until when an unreachable issuer is not asked again */
type IssuerEntry = { config: IssuerConfig; jwks?: Promise<Jwks>; unreachableUntil?: number };
const UNREACHABLE_RETRY_MS = 5000;

export class TokenVerifier {
  readonly #byIssuer = new Map<string, IssuerEntry>();
  readonly #now: () => number;
  readonly #fetchTimeoutMs: number;

  constructor(issuers: IssuerConfig[], options: { now?: () => number; fetchTimeoutMs?: number } = {}) {
    for (const config of issuers) {
      if (this.#byIssuer.has(config.issuer)) {
        throw new ConfigError(`TRIAGE_OIDC_ISSUERS: issuer ${config.issuer} is listed twice`);
      }
      this.#byIssuer.set(config.issuer, { config });
    }
    this.#now = options.now ?? Date.now;
    this.#fetchTimeoutMs = options.fetchTimeoutMs ?? 5000;
  }

  /** Parses `TRIAGE_OIDC_ISSUERS` (YAML or JSON): `{issuers: [{id, issuer, audience, …}]}`. */
  static parse(text: string, options: { now?: () => number; fetchTimeoutMs?: number } = {}): TokenVerifier {
    let doc: unknown;
    try {
      doc = YAML.parse(text);
    } catch (err) {
      throw new ConfigError(`TRIAGE_OIDC_ISSUERS: not valid YAML/JSON (${(err as Error).message.split('\n')[0]})`);
    }
    const parsed = issuersFileSchema.safeParse(doc);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new ConfigError(`TRIAGE_OIDC_ISSUERS: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
    }
    return new TokenVerifier(parsed.data.issuers, options);
  }

  /** True for a credential shaped like a JWT (API keys never are). */
  accepts(credential: string): boolean {
    return credential.length <= MAX_TOKEN_LENGTH && JWT_SHAPE.test(credential);
  }

  /** The principal a token names; 401 for any token that does not verify, 503 when the issuer's keys are out of reach. */
  async verify(token: string): Promise<Principal> {
    let iss: string | undefined;
    try {
      iss = decodeJwt(token).iss;
    } catch {
      throw invalidToken('the bearer token is not a readable JWT');
    }
    const entry = iss === undefined ? undefined : this.#byIssuer.get(iss);
    if (!entry) throw invalidToken('the token was not issued by a trusted issuer');
    const { config } = entry;
    // an issuer that just failed is not asked again by every request meanwhile
    if (entry.unreachableUntil !== undefined && this.#now() < entry.unreachableUntil) throw unavailable();
    let payload: JWTPayload;
    try {
      entry.jwks ??= this.#keysOf(config);
      ({ payload } = await jwtVerify(token, await entry.jwks, {
        issuer: config.issuer,
        audience: config.audience,
        algorithms: [...config.algorithms],
        clockTolerance: config.clockToleranceSeconds,
        currentDate: new Date(this.#now()),
        requiredClaims: ['sub', 'exp'],
      }));
    } catch (err) {
      throw this.#explain(err, entry);
    }
    return principalOf(config, payload);
  }

  async #keysOf(config: IssuerConfig): Promise<Jwks> {
    let uri = config.jwksUri;
    if (!uri) {
      const url = `${config.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
      const res = await fetch(url, { signal: AbortSignal.timeout(this.#fetchTimeoutMs), redirect: 'error' });
      if (!res.ok) throw new errors.JOSEError(`discovery answered ${res.status}`);
      const doc = (await res.json()) as { issuer?: unknown; jwks_uri?: unknown };
      // the document must speak for this issuer (OpenID Connect Discovery §4.3)
      if (doc.issuer !== config.issuer || !keyUrl.safeParse(doc.jwks_uri).success) {
        throw new errors.JOSEError('discovery document does not match the issuer');
      }
      uri = doc.jwks_uri as string;
    }
    return createRemoteJWKSet(new URL(uri), {
      timeoutDuration: this.#fetchTimeoutMs,
      cacheMaxAge: config.jwksCacheSeconds * 1000,
      cooldownDuration: config.jwksCooldownSeconds * 1000,
    });
  }

  #explain(err: unknown, entry: IssuerEntry): Problem {
    if (err instanceof errors.JWTExpired) return invalidToken('the token has expired');
    if (err instanceof errors.JWTClaimValidationFailed)
      return invalidToken(`the token's ${err.claim} claim is not accepted`);
    if (err instanceof errors.JWKSNoMatchingKey)
      return invalidToken('the token is signed with a key its issuer does not publish');
    if (err instanceof errors.JOSEAlgNotAllowed)
      return invalidToken('the token is signed with an algorithm not accepted');
    if (err instanceof errors.JWSSignatureVerificationFailed)
      return invalidToken('the token signature does not verify');
    if (err instanceof errors.JWTInvalid || err instanceof errors.JWSInvalid)
      return invalidToken('the token is malformed');
    // the issuer's keys could not be had (network, timeout, a broken document): not the caller's fault, and the next
    // request tries again
    entry.jwks = undefined;
    entry.unreachableUntil = this.#now() + UNREACHABLE_RETRY_MS;
    return unavailable();
  }
}

function unavailable(): Problem {
  return new Problem('identity_provider_unavailable', 'the token issuer cannot be reached to check the signature', {
    headers: { 'retry-after': String(UNREACHABLE_RETRY_MS / 1000) },
  });
}

function invalidToken(description: string): Problem {
  return new Problem('unauthenticated', description, {
    headers: { 'www-authenticate': `Bearer realm="triage", error="invalid_token", error_description="${description}"` },
  });
}

function claimAt(payload: JWTPayload, path: string): unknown {
  let value: unknown = payload;
  for (const part of path.split('.')) {
    value = typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[part] : undefined;
  }
  return value;
}

function words(value: unknown): string[] {
  if (typeof value === 'string') return value.split(' ').filter(Boolean);
  if (Array.isArray(value)) return value.filter((v): v is string => typeof v === 'string');
  return [];
}

/** A display name fit for an audit record: printable, bounded. */
function displayName(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is removed
  const clean = value.replace(/[\u0000-\u001f\u007f]/g, '').trim();
  return clean ? clean.slice(0, 200) : undefined;
}

function principalOf(config: IssuerConfig, payload: JWTPayload): Principal {
  const subject = String(payload.sub);
  // scopes: `scope` (OAuth, SMART: space-separated) or `scp` (an array, some providers)
  const scopes = [...words(payload.scope), ...words(payload.scp)];
  const granted = [...scopes, ...(config.rolesClaim ? words(claimAt(payload, config.rolesClaim)) : [])]
    .map((v) => config.roleValues[v])
    .filter((r): r is Role => r !== undefined);
  const role = granted.sort((a, b) => rank[b] - rank[a])[0];
  if (!role) throw new Problem('forbidden', 'the token grants no Triage role');
  const models = [
    ...scopes.filter((s) => s.startsWith(MODEL_SCOPE)).map((s) => s.slice(MODEL_SCOPE.length)),
    ...words(claimAt(payload, config.modelsClaim)),
  ];
  // the subject is the issuer's to choose: one with characters unfit for ids and key names is used hashed
  const safeSubject = ID.test(subject)
    ? subject
    : `~${createHash('sha256').update(subject).digest('base64url').slice(0, 22)}`;
  const name = displayName(claimAt(payload, config.nameClaim)) ?? displayName(payload.preferred_username);
  return {
    id: `${config.id}:${safeSubject}`,
    role,
    models: new Set(models),
    callbackHosts: [],
    via: 'token',
    subject,
    ...(name !== undefined ? { name } : {}),
    ...(config.rateLimits ? { limits: config.rateLimits } : {}),
  };
}
