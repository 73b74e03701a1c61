import { createHash } from 'node:crypto';
import { createRemoteJWKSet, decodeJwt, errors, jwtVerify } from 'jose';
import YAML from 'yaml';
import { z } from 'zod';
import { ConfigError } from '../platform/config.ts';
import { Problem } from '../platform/errors.ts';
import { keyUrl } from '../platform/oidc.ts';
import type { RedisClient } from '../platform/redis.ts';

// https, or plain http to loopback only, as for token issuers: keys or records fetched in clear could be swapped
const safeUrl = keyUrl;

const clientSchema = z
  .object({
    /** short name: recorded with feedback, never the token */
    id: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/),
    /** the EHR's `iss` */
    issuer: z.string().min(1),
    /** where the EHR publishes its keys (CDS Hooks: the service decides which JWKS to trust, never a token's jku) */
    jwksUri: safeUrl,
    /** CDS Hooks 2.0 clients sign with ES384 or RS384 */
    algorithms: z
      .array(z.enum(['ES384', 'RS384', 'ES256', 'RS256', 'PS384', 'ES512', 'RS512']))
      .default(['ES384', 'RS384']),
    /** the FHIR servers this EHR may send as `fhirServer`: the only places prefetch gaps are fetched from */
    fhirServers: z.array(safeUrl).default([]),
    clockToleranceSeconds: z.number().int().min(0).max(300).default(5),
  })
  .strict();
export type CdsClient = z.infer<typeof clientSchema>;

const fileSchema = z
  .object({
    /** the public base URL of the gateway: a token's `aud` is `<serviceBaseUrl>/cds-services/<id>` */
    serviceBaseUrl: safeUrl.optional(),
    clients: z.array(clientSchema).min(1),
  })
  .strict();
export type CdsClientsConfig = z.infer<typeof fileSchema>;

/** Parses `TRIAGE_CDS_CLIENTS` (YAML or JSON). */
export function parseCdsClients(text: string): CdsClientsConfig {
  let doc: unknown;
  try {
    doc = YAML.parse(text);
  } catch (err) {
    throw new ConfigError(`TRIAGE_CDS_CLIENTS: not valid YAML/JSON (${(err as Error).message.split('\n')[0]})`);
  }
  const parsed = fileSchema.safeParse(doc);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ConfigError(`TRIAGE_CDS_CLIENTS: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
  }
  return parsed.data;
}

// CDS Hooks 2.0: the JWT lives for at most five minutes
const MAX_TOKEN_AGE_SECONDS = 300;

/**
 * Verifies the JWT a CDS client (the EHR) sends with every call (CDS Hooks 2.0, "Trusting CDS Clients"): signature
 * against the issuer's JWKS, `iss`, `aud` = the service URL called, `exp`, `iat` within five minutes, and a `jti`
 * used once (a replayed token is refused, shared through Redis so every replica knows it).
 */
export class CdsTokenVerifier {
  readonly #clients = new Map<string, { client: CdsClient; jwks: ReturnType<typeof createRemoteJWKSet> }>();
  readonly #redis: RedisClient;
  readonly #prefix: string;

  constructor(clients: readonly CdsClient[], redis: RedisClient, prefix: string) {
    for (const client of clients) {
      this.#clients.set(client.issuer, {
        client,
        jwks: createRemoteJWKSet(new URL(client.jwksUri), { timeoutDuration: 5000, cooldownDuration: 30_000 }),
      });
    }
    this.#redis = redis;
    this.#prefix = prefix;
  }

  /** The client a request's `Authorization: Bearer <jwt>` proves, for a call whose audience is one of `audiences`. */
  async verify(authorization: string | undefined, audiences: string[]): Promise<CdsClient> {
    const token = /^Bearer ([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)$/.exec(authorization ?? '')?.[1];
    if (!token) throw invalid('send the CDS client JWT as "Authorization: Bearer <jwt>"');
    let iss: string | undefined;
    try {
      iss = decodeJwt(token).iss;
    } catch {
      throw invalid('the bearer token is not a readable JWT');
    }
    const entry = iss === undefined ? undefined : this.#clients.get(iss);
    if (!entry) throw invalid('the token was not issued by a registered CDS client');
    const { client } = entry;
    let payload: Awaited<ReturnType<typeof jwtVerify>>['payload'];
    try {
      ({ payload } = await jwtVerify(token, entry.jwks, {
        issuer: client.issuer,
        audience: audiences,
        algorithms: client.algorithms,
        clockTolerance: client.clockToleranceSeconds,
        maxTokenAge: MAX_TOKEN_AGE_SECONDS + client.clockToleranceSeconds,
        requiredClaims: ['iss', 'aud', 'exp', 'iat', 'jti'],
      }));
    } catch (err) {
      throw explain(err);
    }
    const ttl = Math.max(1, (payload.exp as number) - Math.floor(Date.now() / 1000) + client.clockToleranceSeconds);
    const jti = createHash('sha256')
      .update(`${client.issuer}\0${String(payload.jti)}`)
      .digest('hex');
    const fresh = await this.#redis.set(`${this.#prefix}:cds:jti:${jti}`, '1', 'EX', ttl, 'NX');
    if (fresh !== 'OK') throw invalid('the token was already used (jti)');
    return client;
  }
}

function explain(err: unknown): Problem {
  if (err instanceof errors.JWTExpired)
    return invalid(err.claim === 'iat' ? 'the token was issued (iat) over five minutes ago' : 'the token has expired');
  if (err instanceof errors.JWTClaimValidationFailed) return invalid(`the token's ${err.claim} claim is not accepted`);
  if (err instanceof errors.JWKSNoMatchingKey)
    return invalid('the token is signed with a key its issuer does not publish');
  if (err instanceof errors.JOSEAlgNotAllowed) return invalid('the token is signed with an algorithm not accepted');
  if (err instanceof errors.JWSSignatureVerificationFailed) return invalid('the token signature does not verify');
  if (err instanceof errors.JWTInvalid || err instanceof errors.JWSInvalid) return invalid('the token is malformed');
  return new Problem('identity_provider_unavailable', "the CDS client's keys cannot be fetched to check the token", {
    headers: { 'retry-after': '5' },
  });
}

function invalid(description: string): Problem {
  return new Problem('unauthenticated', description, {
    headers: {
      'www-authenticate': `Bearer realm="cds-services", error="invalid_token", error_description="${description}"`,
    },
  });
}
