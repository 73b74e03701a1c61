import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { LoadedModel } from '../registry/load.ts';
import type { Manifest, Tier } from '../registry/schema.ts';
import type { CorpusEntry } from './predictions.ts';
import { chooseVersion, type RoutingState, routingFromManifest } from './routing.ts';

/** A model as every tier sees it: its manifest and the routing in force. Immutable: a change makes a new one. */
export interface CatalogModel {
  readonly name: string;
  readonly manifest: Manifest;
  readonly loaded: LoadedModel;
  readonly tier: Tier;
  readonly tierReasons: readonly string[];
  readonly corpus?: CorpusEntry[];
  /** the routing in force: a change made through the API (while it applies to this manifest), else the manifest's */
  readonly routing: RoutingState;
  /** the primary version */
  readonly version: string;
}

/** A routing change made through the API, as stored in Redis (one hash field per model). */
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

/** Called with the next models before a reload swaps them in (the sync tier loads and warms new versions there). */
export type ReloadPreparer = (next: readonly CatalogModel[]) => Promise<void>;

/**
 * The one place that knows which manifests and versions are in force: the loaded manifests, and the routing of each
 * model (primary, canary, shadows), updated by manifest reloads and by changes made through the API on any replica
 * (stored in Redis, followed by polling and read fresh where a worker decides). Every tier reads it; nothing else
 * decides a version.
 */
export class ModelCatalog {
  readonly #redis: Redis | undefined;
  readonly #key: string;
  readonly #logger: Logger | undefined;
  readonly #random: () => number;
  #models = new Map<string, CatalogModel>();
  /** the stored change of each model, raw, as last read from Redis */
  #stored = new Map<string, string>();
  #preparers: ReloadPreparer[] = [];
  #timer: NodeJS.Timeout | undefined;

  private constructor(redis: Redis | undefined, prefix: string, logger?: Logger, random?: () => number) {
    this.#redis = redis;
    this.#key = `${prefix}:routing`;
    this.#logger = logger;
    this.#random = random ?? Math.random;
  }

  /** A catalog shared through Redis: stored routing changes are read now, and followed with `follow`. */
  static async open(options: {
    redis: Redis;
    prefix: string;
    models: readonly LoadedModel[];
    logger?: Logger;
    random?: () => number;
  }): Promise<ModelCatalog> {
    const catalog = new ModelCatalog(options.redis, options.prefix, options.logger, options.random);
    catalog.#install(options.models);
    await catalog.refresh();
    return catalog;
  }

  /** A catalog fixed at a snapshot (a batch thread scores one run with the routing its parent chose). */
  static fixed(models: readonly LoadedModel[], routing: Readonly<Record<string, RoutingState>> = {}): ModelCatalog {
    const catalog = new ModelCatalog(undefined, '');
    catalog.#install(models);
    for (const [name, r] of Object.entries(routing)) catalog.#apply(name, r);
    return catalog;
  }

  get(name: string): CatalogModel | undefined {
    return this.#models.get(name);
  }

  list(): CatalogModel[] {
    return [...this.#models.values()];
  }

  /** The version that answers a request: the canary split (sticky per subject), else the primary. */
  chooseVersion(model: CatalogModel, subjectKey?: string): string {
    return chooseVersion(model.name, model.routing, subjectKey, this.#random);
  }

  /** The model with its routing read from Redis now: for decisions made off the hot path (workers, batch runs). */
  async fresh(name: string): Promise<CatalogModel | undefined> {
    if (this.#redis && this.#models.has(name)) {
      const raw = await this.#redis.hget(this.#key, name);
      this.#absorb(name, raw ?? undefined);
    }
    return this.#models.get(name);
  }

  /** Re-reads every stored routing change (made through any replica). */
  async refresh(): Promise<void> {
    if (!this.#redis) return;
    const all = await this.#redis.hgetall(this.#key);
    for (const name of this.#models.keys()) this.#absorb(name, all[name]);
  }

  /** Applies stored changes now and every `everyMs`, so a change made through another replica arrives here. */
  follow(everyMs: number): void {
    clearInterval(this.#timer);
    this.#timer = setInterval(() => {
      this.refresh().catch((err: Error) =>
        this.#logger?.warn({ err: { message: err.message } }, 'routing refresh failed'),
      );
    }, everyMs);
    this.#timer.unref();
  }

  /** Stores a routing change for every replica and applies it here at once. */
  async setRouting(name: string, routing: RoutingState, by: string): Promise<CatalogModel> {
    const model = this.#models.get(name);
    if (!model) throw new Error(`no model ${name}`);
    const stored: StoredRouting = {
      routing,
      basedOn: manifestRoutingHash(model.manifest),
      by,
      at: new Date().toISOString(),
    };
    const raw = JSON.stringify(stored);
    await this.#redis?.hset(this.#key, name, raw);
    this.#stored.set(name, raw);
    return this.#apply(name, routing);
  }

  /** Called with the next models before every reload swaps them in; a preparer that throws stops the reload. */
  onReload(preparer: ReloadPreparer): void {
    this.#preparers.push(preparer);
  }

  /**
   * Swaps in freshly loaded manifests: stored changes still valid for them are applied, the preparers get the next
   * models first (a failure there keeps the current ones), and requests in flight keep the models they hold.
   */
  async replace(loaded: readonly LoadedModel[]): Promise<CatalogModel[]> {
    const all = this.#redis ? await this.#redis.hgetall(this.#key) : Object.fromEntries(this.#stored);
    const next = new Map<string, CatalogModel>();
    for (const m of loaded) {
      const routing = storedFor(all[m.manifest.name], m.manifest) ?? routingFromManifest(m.manifest);
      next.set(m.manifest.name, entry(m, routing));
    }
    for (const prepare of this.#preparers) await prepare([...next.values()]);
    this.#models = next;
    this.#stored = new Map(Object.entries(all));
    return this.list();
  }

  close(): void {
    clearInterval(this.#timer);
  }

  #install(loaded: readonly LoadedModel[]): void {
    this.#models = new Map(loaded.map((m) => [m.manifest.name, entry(m, routingFromManifest(m.manifest))]));
  }

  #absorb(name: string, raw: string | undefined): void {
    if (raw === this.#stored.get(name)) return;
    const model = this.#models.get(name);
    if (!model) return;
    if (raw === undefined) this.#stored.delete(name);
    else this.#stored.set(name, raw);
    this.#apply(name, storedFor(raw, model.manifest) ?? routingFromManifest(model.manifest));
  }

  #apply(name: string, routing: RoutingState): CatalogModel {
    const model = this.#models.get(name);
    if (!model) throw new Error(`no model ${name}`);
    if (JSON.stringify(model.routing) === JSON.stringify(routing)) return model;
    const next = entry(model.loaded, routing);
    this.#models.set(name, next);
    return next;
  }
}

/** A stored change, if it was made against this manifest's routing (a newer manifest release supersedes it). */
function storedFor(raw: string | undefined, manifest: Manifest): RoutingState | undefined {
  if (!raw) return undefined;
  const stored = JSON.parse(raw) as StoredRouting;
  return stored.basedOn === manifestRoutingHash(manifest) ? stored.routing : undefined;
}

function entry(m: LoadedModel, routing: RoutingState): CatalogModel {
  return {
    name: m.manifest.name,
    manifest: m.manifest,
    loaded: m,
    tier: m.classification.tier,
    tierReasons: m.classification.reasons,
    ...(m.corpus ? { corpus: m.corpus } : {}),
    routing,
    version: routing.primary,
  };
}
