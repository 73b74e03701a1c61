import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { JobStore } from '../jobs/store.ts';
import type { Principal } from '../platform/auth.ts';
import { Problem } from '../platform/errors.ts';
import type { Manifest } from '../registry/schema.ts';
import { type RoutingState, routingFromManifest } from '../serving/routing.ts';
import type { ModelService, ServedModel } from '../sync/service.ts';

interface StoredRouting {
  routing: RoutingState;
  /** the manifest routing this change was made against: a new manifest release supersedes it */
  basedOn: string;
  by: string;
  at: string;
}

export function manifestRoutingHash(m: Manifest): string {
  return createHash('sha256').update(JSON.stringify(m.routing)).digest('hex').slice(0, 16);
}

/** The Redis hash of routing changes made through the API, one field per model. */
function routingKey(prefix: string): string {
  return `${prefix}:routing`;
}

/** A stored change, if it was made against this manifest's routing (a newer manifest release supersedes it). */
function storedFor(raw: string, manifest: Manifest): RoutingState | undefined {
  const stored = JSON.parse(raw) as StoredRouting;
  return stored.basedOn === manifestRoutingHash(manifest) ? stored.routing : undefined;
}

/**
 * Releases without redeploying: promote, roll back, canary weights and shadows. Every change checks the target's
 * release evidence, is audited (who, when, why), is stored in Redis so every replica applies it (each polls), and
 * lasts until the next manifest release changes the model's routing.
 */
export class ReleaseService {
  readonly #redis: Redis;
  readonly #key: string;
  readonly #models: ModelService;
  readonly #audit: JobStore;
  readonly #logger: Logger;
  #timer: NodeJS.Timeout | undefined;

  constructor(redis: Redis, prefix: string, models: ModelService, audit: JobStore, logger: Logger) {
    this.#redis = redis;
    this.#key = routingKey(prefix);
    this.#models = models;
    this.#audit = audit;
    this.#logger = logger;
  }

  /** Applies the stored routing now and then every `everyMs`, so changes made through any replica arrive here. */
  async follow(everyMs: number): Promise<void> {
    await this.refresh();
    this.#timer = setInterval(() => {
      this.refresh().catch((err) =>
        this.#logger.warn({ err: { message: (err as Error).message } }, 'routing refresh failed'),
      );
    }, everyMs);
    this.#timer.unref();
  }

  async refresh(): Promise<void> {
    for (const [name, raw] of Object.entries(await this.#redis.hgetall(this.#key))) {
      const model = this.#models.get(name);
      const routing = model && storedFor(raw, model.manifest);
      if (routing && JSON.stringify(model.routing) !== JSON.stringify(routing)) this.#models.setRouting(name, routing);
    }
  }

  /**
   * Stored overrides still valid for these manifests (used when manifests reload): a change made against another
   * manifest routing is superseded by the manifest release, as `refresh` treats it.
   */
  async overrides(manifests: readonly Manifest[]): Promise<Map<string, RoutingState>> {
    const byName = new Map(manifests.map((m) => [m.name, m]));
    const out = new Map<string, RoutingState>();
    for (const [name, raw] of Object.entries(await this.#redis.hgetall(this.#key))) {
      const manifest = byName.get(name);
      const routing = manifest && storedFor(raw, manifest);
      if (routing) out.set(name, routing);
    }
    return out;
  }

  #evidenceOf(model: ServedModel, version: string, purpose: string) {
    const v = model.manifest.versions.find((x) => x.version === version);
    if (!v) throw new Problem('invalid_request', `model "${model.manifest.name}" has no version "${version}"`);
    if (!model.versions.has(version)) throw new Problem('invalid_state', `version "${version}" is not loaded`);
    if (purpose !== 'shadow' && !v.evidence) {
      throw new Problem('evidence_required', `version "${version}" has no release evidence: it cannot be ${purpose}`);
    }
    return v;
  }

  async #apply(
    principal: Principal,
    model: ServedModel,
    routing: RoutingState,
    action: string,
    reason: unknown,
    detail: string,
  ) {
    if (typeof reason !== 'string' || reason.trim().length === 0 || reason.length > 2000) {
      throw new Problem('invalid_request', 'reason is required (1-2000 characters)');
    }
    const stored: StoredRouting = {
      routing,
      basedOn: manifestRoutingHash(model.manifest),
      by: principal.id,
      at: new Date().toISOString(),
    };
    await this.#redis.hset(this.#key, model.manifest.name, JSON.stringify(stored));
    this.#models.setRouting(model.manifest.name, routing);
    await this.#audit.appendAudit({
      actor: principal.id,
      role: principal.role,
      action,
      target: model.manifest.name,
      model: model.manifest.name,
      version: routing.primary,
      reason,
      detail,
    });
    this.#logger.info({ model: model.manifest.name, action, by: principal.id, detail }, 'routing changed');
    return routing;
  }

  async promote(principal: Principal, model: ServedModel, version: unknown, reason: unknown) {
    if (typeof version !== 'string') throw new Problem('invalid_request', 'version is required');
    const v = this.#evidenceOf(model, version, 'primary');
    if (v.evidence && v.evidence.approvedThreshold !== model.manifest.output.threshold) {
      throw new Problem(
        'evidence_required',
        `version "${version}" was approved at threshold ${v.evidence.approvedThreshold}, the model runs at ${model.manifest.output.threshold}: change the threshold through a manifest release`,
      );
    }
    if (version === model.routing.primary)
      throw new Problem('invalid_state', `version "${version}" is already primary`);
    const { canary, ...rest } = model.routing;
    const routing: RoutingState = {
      ...rest,
      primary: version,
      ...(canary && canary.version !== version ? { canary } : {}),
    };
    return this.#apply(
      principal,
      model,
      routing,
      'release.promote',
      reason,
      `primary ${model.routing.primary} → ${version}`,
    );
  }

  async rollback(principal: Principal, model: ServedModel, reason: unknown) {
    const current = model.manifest.versions.find((x) => x.version === model.routing.primary);
    const target = current?.evidence?.rollbackTarget;
    if (!target) throw new Problem('invalid_state', `version "${model.routing.primary}" declares no rollback target`);
    this.#evidenceOf(model, target, 'primary');
    const { canary: _dropped, ...rest } = model.routing;
    return this.#apply(
      principal,
      model,
      { ...rest, primary: target },
      'release.rollback',
      reason,
      `primary ${model.routing.primary} → ${target}`,
    );
  }

  async setCanary(
    principal: Principal,
    model: ServedModel,
    body: { version?: unknown; weight?: unknown; reason?: unknown },
  ) {
    const weight = body.weight;
    if (typeof weight !== 'number' || !Number.isFinite(weight) || weight < 0 || weight > 100) {
      throw new Problem('invalid_request', 'weight must be a number from 0 to 100 (percent of subjects)');
    }
    const { canary: _old, ...rest } = model.routing;
    if (weight === 0) return this.#apply(principal, model, rest, 'release.canary', body.reason, 'canary removed');
    if (typeof body.version !== 'string') throw new Problem('invalid_request', 'version is required');
    this.#evidenceOf(model, body.version, 'a canary');
    if (body.version === model.routing.primary)
      throw new Problem('invalid_request', 'the canary must differ from the primary');
    return this.#apply(
      principal,
      model,
      { ...rest, canary: { version: body.version, weight } },
      'release.canary',
      body.reason,
      `canary ${body.version} at ${weight}%`,
    );
  }

  async setShadow(
    principal: Principal,
    model: ServedModel,
    body: { versions?: unknown; sampleRate?: unknown; reason?: unknown },
  ) {
    const { versions, sampleRate } = body;
    if (!Array.isArray(versions) || versions.length > 5 || versions.some((v) => typeof v !== 'string')) {
      throw new Problem('invalid_request', 'versions must be a list of up to 5 version ids ([] removes shadows)');
    }
    const { shadow: _old, ...rest } = model.routing;
    if (versions.length === 0)
      return this.#apply(principal, model, rest, 'release.shadow', body.reason, 'shadows removed');
    if (typeof sampleRate !== 'number' || !(sampleRate >= 0 && sampleRate <= 1)) {
      throw new Problem('invalid_request', 'sampleRate must be a number from 0 to 1');
    }
    for (const v of versions as string[]) {
      this.#evidenceOf(model, v, 'shadow');
      if (v === model.routing.primary) throw new Problem('invalid_request', 'the primary cannot shadow itself');
    }
    return this.#apply(
      principal,
      model,
      { ...rest, shadow: { versions: versions as string[], sampleRate } },
      'release.shadow',
      body.reason,
      `shadows ${versions.join(',')} at ${sampleRate}`,
    );
  }

  close(): void {
    clearInterval(this.#timer);
  }
}

/**
 * The routing in force for a model as processes without a ModelService (workers) see it: a change made through the
 * API, while it still applies to this manifest, else the manifest's. Cached briefly: workers read it per job.
 */
export class RoutingReader {
  readonly #redis: Redis;
  readonly #key: string;
  readonly #ttlMs: number;
  #cache = new Map<string, { at: number; routing: RoutingState }>();

  constructor(redis: Redis, prefix: string, ttlMs = 2000) {
    this.#redis = redis;
    this.#key = routingKey(prefix);
    this.#ttlMs = ttlMs;
  }

  async get(manifest: Manifest): Promise<RoutingState> {
    const cached = this.#cache.get(manifest.name);
    if (cached && Date.now() - cached.at < this.#ttlMs) return cached.routing;
    const raw = await this.#redis.hget(this.#key, manifest.name).catch(() => null);
    const routing = (raw && storedFor(raw, manifest)) || routingFromManifest(manifest);
    this.#cache.set(manifest.name, { at: Date.now(), routing });
    return routing;
  }
}
