import { createHash, randomBytes } from 'node:crypto';
import YAML from 'yaml';
import { z } from 'zod';
import { ConfigError } from './config.ts';
import { Problem } from './errors.ts';
import { type RateLimits, rateLimitsSchema } from './rate-limit.ts';

export const roles = ['client', 'reviewer', 'approver', 'admin'] as const;
export type Role = (typeof roles)[number];

export interface Principal {
  /**
   * The key's name, or `<issuer id>:<subject>` for a bearer token: appears in logs and audit records, owns jobs;
   * never the key or token itself
   */
  id: string;
  role: Role;
  /** models a client may call; `*` = all */
  models: ReadonlySet<string>;
  /** hosts its async callbacks may go to (exact names, or `*.example.org`) */
  callbackHosts: readonly string[];
  /** shared data areas (`shared/<name>`) this key may read batch inputs from, beside its own `clients/<id>` */
  dataAreas?: readonly string[];
  /** how the caller proved who it is (absent: an API key) */
  via?: 'api-key' | 'token';
  /** the person a token names: the issuer's subject and their display name, recorded on what they decide */
  subject?: string;
  name?: string;
  /** this client's rate limits where they differ from the defaults */
  limits?: RateLimits;
}

/** Who did something, for audit entries: the principal's id and role, and the named person behind a token. */
export function actorOf(p: Principal): { actor: string; role: Role; actorSubject?: string; actorName?: string } {
  return {
    actor: p.id,
    role: p.role,
    ...(p.subject !== undefined ? { actorSubject: p.subject } : {}),
    ...(p.name !== undefined ? { actorName: p.name } : {}),
  };
}

/**
 * A key id names its data area (`clients/<id>`) and a data area a folder (`shared/<area>`): `.` or `..` there would be
 * the folder above, every other client's area or every shared one.
 */
const folderName = (message: string) =>
  z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,64}$/, message)
    .refine((s) => s !== '.' && s !== '..', 'must not be "." or ".."');

const keyEntrySchema = z
  .object({
    id: folderName('must be 1-64 of letters, digits, . _ -'),
    role: z.enum(roles),
    /** sha256 (hex) of the key: keys are stored hashed */
    sha256: z.string().regex(/^[a-f0-9]{64}$/, 'must be the 64-hex-digit sha256 of the key'),
    models: z.array(z.string().min(1)).default(['*']),
    callbackHosts: z.array(z.string().min(1)).default([]),
    dataAreas: z.array(folderName('an area name under shared/')).default([]),
    /** Standard Webhooks secret (`whsec_` + base64) signing this client's callbacks */
    callbackSecret: z
      .string()
      .regex(/^whsec_[A-Za-z0-9+/]{24,}={0,2}$/, 'must be whsec_ followed by a base64 secret of at least 18 bytes')
      .optional(),
    /** this key's limits per endpoint class, over the TRIAGE_RATE_LIMIT_* defaults */
    rateLimits: rateLimitsSchema.optional(),
  })
  .strict();
type KeyEntry = z.input<typeof keyEntrySchema>;
const keysFileSchema = z.object({ keys: z.array(keyEntrySchema).min(1) }).strict();

export function hashKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/**
 * API keys, stored by their sha256. A lookup by hash leaks nothing useful through timing: an attacker cannot steer
 * the hash of a guess towards a stored hash.
 */
export class ApiKeyStore {
  readonly #byHash = new Map<string, Principal>();
  readonly #callbackSecrets = new Map<string, string>();
  /** valid keys seen recently → principal: saves a sha256 per request on the hot path */
  readonly #recent = new Map<string, Principal>();

  constructor(entries: KeyEntry[]) {
    for (const e of entries) {
      if (this.#byHash.has(e.sha256)) throw new ConfigError(`TRIAGE_API_KEYS: key "${e.id}" duplicates another key`);
      this.#byHash.set(e.sha256, {
        id: e.id,
        role: e.role,
        models: new Set(e.models ?? ['*']),
        callbackHosts: e.callbackHosts ?? [],
        dataAreas: e.dataAreas ?? [],
        via: 'api-key',
        ...(e.rateLimits ? { limits: rateLimitsSchema.parse(e.rateLimits) } : {}),
      });
      if (e.callbackSecret) this.#callbackSecrets.set(e.id, e.callbackSecret);
    }
  }

  /** The callback allowlist of the client `id`. */
  callbackHostsOf(id: string): readonly string[] {
    for (const p of this.#byHash.values()) if (p.id === id) return p.callbackHosts;
    return [];
  }

  /** The secret that signs callbacks for the client `id` (workers look it up by the job's owner). */
  callbackSecret(id: string): string | undefined {
    return this.#callbackSecrets.get(id);
  }

  /** Parses the `TRIAGE_API_KEYS` document (YAML or JSON): `{keys: [{id, role, sha256, models}]}`. */
  static parse(text: string): ApiKeyStore {
    let doc: unknown;
    try {
      doc = YAML.parse(text);
    } catch (err) {
      throw new ConfigError(`TRIAGE_API_KEYS: not valid YAML/JSON (${(err as Error).message.split('\n')[0]})`);
    }
    const parsed = keysFileSchema.safeParse(doc);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new ConfigError(`TRIAGE_API_KEYS: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
    }
    // the checked input, not the parsed output: the constructor applies defaults and parses rates itself
    return new ApiKeyStore((doc as { keys: KeyEntry[] }).keys);
  }

  /** Development mode: one fresh key per role, returned in clear once so they can be printed. */
  static generateDevelopmentKeys(): { store: ApiKeyStore; keys: Record<Role, string>; callbackSecret: string } {
    const keys = Object.fromEntries(
      roles.map((role) => [role, `trg_${role}_${randomBytes(24).toString('base64url')}`]),
    ) as Record<Role, string>;
    const callbackSecret = `whsec_${randomBytes(24).toString('base64')}`;
    const store = new ApiKeyStore(
      roles.map((role) => ({
        id: `dev-${role}`,
        role,
        sha256: hashKey(keys[role]),
        models: ['*'],
        ...(role === 'client' ? { callbackHosts: ['localhost', '127.0.0.1', '::1'], callbackSecret } : {}),
      })),
    );
    return { store, keys, callbackSecret };
  }

  authenticate(key: string | undefined): Principal | undefined {
    if (!key) return undefined;
    const cached = this.#recent.get(key);
    if (cached) return cached;
    const principal = this.#byHash.get(hashKey(key));
    // remember valid keys only (a flood of wrong keys cannot grow it), bounded
    if (principal) {
      if (this.#recent.size >= 1024) this.#recent.clear();
      this.#recent.set(key, principal);
    }
    return principal;
  }
}

/** Reads the key from `Authorization: Bearer …` or `x-api-key`. */
export function keyFromHeaders(authorization: string | undefined, apiKey: string | undefined): string | undefined {
  if (apiKey) return apiKey;
  if (!authorization) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  return match?.[1];
}

/** Admins pass every role check; otherwise the role must be one of `allowed`. */
export function assertRole(principal: Principal, allowed: readonly Role[]): void {
  if (principal.role === 'admin' || allowed.includes(principal.role)) return;
  throw new Problem('forbidden', `role "${principal.role}" may not do this; needs ${allowed.join(' or ')}`);
}

/** Whether the principal may use `model`: call it (a client), or see and decide its held results (a reviewer). */
export function mayUseModel(principal: Principal, model: string): boolean {
  return principal.role === 'admin' || principal.models.has('*') || principal.models.has(model);
}

/** The models a principal is limited to, or undefined when it may use every one. */
export function modelScope(principal: Principal): readonly string[] | undefined {
  return principal.role === 'admin' || principal.models.has('*') ? undefined : [...principal.models];
}

export function assertModelAllowed(principal: Principal, model: string): void {
  if (mayUseModel(principal, model)) return;
  throw new Problem('forbidden', `this ${principal.via === 'token' ? 'token' : 'key'} may not call model "${model}"`);
}
