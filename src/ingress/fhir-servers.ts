import YAML from 'yaml';
import { z } from 'zod';
import { ConfigError, isLoopback } from '../platform/config.ts';

/**
 * The FHIR servers batch runs may export from (TRIAGE_FHIR_SERVERS, YAML or JSON). Addresses and credentials live
 * here only: a request names a server by id, so no caller can point Triage at a host or hand it a token.
 */
const ID = /^[A-Za-z0-9._-]{1,64}$/;

const smartAuth = z
  .object({
    kind: z.literal('smart-backend'),
    tokenUrl: z.url(),
    clientId: z.string().min(1).max(256),
    /** PKCS#8 PEM, or a private JWK as JSON */
    privateKey: z.string().min(1),
    keyId: z.string().min(1).max(256),
    algorithm: z.enum(['RS384', 'ES384', 'RS256', 'ES256']).default('RS384'),
    /** SMART v2 scopes (v1 `system/*.read` too): what the client asks for */
    scope: z.string().min(1).max(2000).default('system/Patient.rs system/Observation.rs'),
  })
  .strict();

const bearerAuth = z.object({ kind: z.literal('bearer'), token: z.string().min(8) }).strict();
const noAuth = z.object({ kind: z.literal('none') }).strict();

const serverSchema = z
  .object({
    id: z.string().regex(ID),
    /** the FHIR base URL (`…/fhir`); https, or http to loopback */
    baseUrl: z.url(),
    auth: z.discriminatedUnion('kind', [smartAuth, bearerAuth, noAuth]),
    /** client key ids that may run exports from this server on demand (schedules are the admins', always allowed) */
    clients: z.array(z.string().regex(ID)).max(200).default([]),
    /** other origins its file URLs may live on that must receive the access token (else only the base URL's) */
    tokenOrigins: z.array(z.url()).max(20).default([]),
    /** poll interval when the status answer has no Retry-After, and the bounds put on a Retry-After */
    pollSeconds: z.number().min(0.05).max(600).default(5),
    maxPollSeconds: z.number().min(0.05).max(3600).default(120),
    /** an export not complete after this fails its run (step "status") */
    timeoutMinutes: z
      .number()
      .min(0.01)
      .max(24 * 60)
      .default(360),
  })
  .strict();

export type FhirServer = z.infer<typeof serverSchema>;
export type SmartAuth = z.infer<typeof smartAuth>;

const fileSchema = z.object({ servers: z.array(serverSchema).max(100) }).strict();

function secureUrl(url: string): boolean {
  const u = new URL(url);
  return u.protocol === 'https:' || (u.protocol === 'http:' && isLoopback(u.hostname));
}

/** Parses TRIAGE_FHIR_SERVERS; a bad entry stops the start, naming the field (never a credential's value). */
export function parseFhirServers(raw: string | undefined): Map<string, FhirServer> {
  if (raw === undefined) return new Map();
  let doc: unknown;
  try {
    doc = YAML.parse(raw);
  } catch {
    throw new ConfigError('TRIAGE_FHIR_SERVERS: not valid YAML or JSON');
  }
  const parsed = fileSchema.safeParse(doc);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ConfigError(`TRIAGE_FHIR_SERVERS: ${issue?.path.join('.')}: ${issue?.message}`);
  }
  const servers = new Map<string, FhirServer>();
  for (const s of parsed.data.servers) {
    if (servers.has(s.id)) throw new ConfigError(`TRIAGE_FHIR_SERVERS: server id "${s.id}" appears twice`);
    const urls = [s.baseUrl, ...(s.auth.kind === 'smart-backend' ? [s.auth.tokenUrl] : []), ...s.tokenOrigins];
    // tokens and patient data would cross the network in clear
    if (!urls.every(secureUrl)) {
      throw new ConfigError(`TRIAGE_FHIR_SERVERS: server "${s.id}": URLs must be https (http only to loopback)`);
    }
    servers.set(s.id, { ...s, baseUrl: s.baseUrl.replace(/\/+$/, '') });
  }
  return servers;
}
