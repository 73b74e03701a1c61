import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { RedisClient } from '../platform/redis.ts';
import type { LoadedModel } from '../registry/load.ts';
import type { Manifest, Tier } from '../registry/schema.ts';
import type { CorpusEntry } from './predictions.ts';
import { chooseVersion, type RoutingState, routingFromManifest } from './routing.ts';
import { type Suspension, Suspensions } from './suspension.ts';
import { type AppliedThreshold, appliedFor, withThreshold } from './thresholds.ts';

export type { Suspension } from './suspension.ts';

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
  /** the approved change request whose threshold is in force instead of the manifest's (`manifest` carries it) */
  readonly thresholdChange?: AppliedThreshold;
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
  readonly #redis: RedisClient | undefined;
  readonly #key: string;
  readonly #thresholdKey: string;
  /** a batch thread's catalog: routing fixed for the run, suspensions still followed */
  readonly #pinned: boolean;
  readonly #logger: Logger | undefined;
  readonly #random: () => number;
  #models = new Map<string, CatalogModel>();
  /** the stored change of each model, raw, as last read from Redis */
  #stored = new Map<string, string>();
  /** the applied threshold change of each model, raw, as last read from Redis */
  #storedThresholds = new Map<string, string>();
  /** routing and threshold changes made through this catalog: a read that overlapped one is not applied */
  #writes = 0;
  /** the kill switches in force: kept apart from routing so no manifest release lifts one */
  readonly suspensions: Suspensions;
  #preparers: ReloadPreparer[] = [];
  #timer: NodeJS.Timeout | undefined;

  private constructor(
    redis: RedisClient | undefined,
    prefix: string,
    logger?: Logger,
    random?: () => number,
    pinned = false,
  ) {
    this.#redis = redis;
    this.#key = `${prefix}:routing`;
    this.#thresholdKey = `${prefix}:thresholds`;
    this.suspensions = new Suspensions(redis, prefix);
    this.#pinned = pinned;
    this.#logger = logger;
    this.#random = random ?? Math.random;
  }

  /** A catalog shared through Redis: stored routing changes are read now, and followed with `follow`. */
  static async open(options: {
    redis: RedisClient;
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

  /**
   * A catalog fixed at a snapshot (a batch thread scores one run with the routing its parent chose). Given Redis, it
   * still follows suspensions: a kill switch stops a run in progress.
   */
  static fixed(
    models: readonly LoadedModel[],
    routing: Readonly<Record<string, RoutingState>> = {},
    shared?: { redis: RedisClient; prefix: string },
  ): ModelCatalog {
    const catalog = new ModelCatalog(shared?.redis, shared?.prefix ?? '', undefined, undefined, true);
    catalog.#install(models);
    for (const [name, r] of Object.entries(routing)) catalog.#apply(name, r, undefined);
    return catalog;
  }

  get(name: string): CatalogModel | undefined {
    return this.#models.get(name);
  }

  list(): CatalogModel[] {
    return [...this.#models.values()];
  }

  /**
   * The version that answers a request: the canary split (sticky per subject), else the primary. A suspended canary
   * sends its share back to the primary.
   */
  chooseVersion(model: CatalogModel, subjectKey?: string): string {
    const version = chooseVersion(model.name, model.routing, subjectKey, this.#random);
    return version !== model.routing.primary && this.suspension(model.name, version) ? model.routing.primary : version;
  }

  /** The suspension that stops this version scoring (the whole model's, else the version's), if any. */
  suspension(name: string, version: string): Suspension | undefined {
    return this.suspensions.lookup(name, version);
  }

  /** The model with its routing read from Redis now: for decisions made off the hot path (workers, batch runs). */
  async fresh(name: string): Promise<CatalogModel | undefined> {
    if (this.#redis && this.#models.has(name)) {
      const writes = this.#writes;
      const [raw, threshold] = await Promise.all([
        this.#pinned ? undefined : this.#redis.hget(this.#key, name),
        this.#pinned ? undefined : this.#redis.hget(this.#thresholdKey, name),
        this.suspensions.read(),
      ]);
      // a change made here while the read was out is newer than what the read saw: keep it
      if (!this.#pinned && writes === this.#writes) this.#absorb(name, raw ?? undefined, threshold ?? undefined);
    }
    return this.#models.get(name);
  }

  /** Re-reads every stored routing change, threshold change and suspension (made through any replica). */
  async refresh(): Promise<void> {
    if (!this.#redis) return;
    const writes = this.#writes;
    const [all, thresholds] = await Promise.all([
      this.#pinned ? undefined : this.#redis.hgetall(this.#key),
      this.#pinned ? undefined : this.#redis.hgetall(this.#thresholdKey),
      this.suspensions.read(),
    ]);
    // a change made here while the read was out is newer than what the read saw: the next refresh reads it
    if (all && writes === this.#writes) {
      for (const name of this.#models.keys()) this.#absorb(name, all[name], thresholds?.[name]);
    }
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
    this.#writes++;
    await this.#redis?.hset(this.#key, name, raw);
    this.#stored.set(name, raw);
    return this.#apply(name, routing, model.thresholdChange);
  }

  /** Stores an approved threshold for every replica and applies it here at once. */
  async setThreshold(name: string, applied: AppliedThreshold): Promise<CatalogModel> {
    const model = this.#models.get(name);
    if (!model) throw new Error(`no model ${name}`);
    const raw = JSON.stringify(applied);
    this.#writes++;
    await this.#redis?.hset(this.#thresholdKey, name, raw);
    this.#storedThresholds.set(name, raw);
    return this.#apply(name, model.routing, appliedFor(raw, model.loaded.manifest));
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
    const thresholds = this.#redis
      ? await this.#redis.hgetall(this.#thresholdKey)
      : Object.fromEntries(this.#storedThresholds);
    const next = new Map<string, CatalogModel>();
    for (const m of loaded) {
      const name = m.manifest.name;
      const routing = storedFor(all[name], m.manifest) ?? routingFromManifest(m.manifest);
      next.set(name, entry(m, routing, appliedFor(thresholds[name], m.manifest)));
    }
    for (const prepare of this.#preparers) await prepare([...next.values()]);
    this.#models = next;
    this.#stored = new Map(Object.entries(all));
    this.#storedThresholds = new Map(Object.entries(thresholds));
    return this.list();
  }

  close(): void {
    clearInterval(this.#timer);
  }

  #install(loaded: readonly LoadedModel[]): void {
    this.#models = new Map(loaded.map((m) => [m.manifest.name, entry(m, routingFromManifest(m.manifest))]));
  }

  #absorb(name: string, raw: string | undefined, threshold: string | undefined): void {
    if (raw === this.#stored.get(name) && threshold === this.#storedThresholds.get(name)) return;
    const model = this.#models.get(name);
    if (!model) return;
    remember(this.#stored, name, raw);
    remember(this.#storedThresholds, name, threshold);
    const manifest = model.loaded.manifest;
    this.#apply(name, storedFor(raw, manifest) ?? routingFromManifest(manifest), appliedFor(threshold, manifest));
  }

  #apply(name: string, routing: RoutingState, threshold: AppliedThreshold | undefined): CatalogModel {
    const model = this.#models.get(name);
    if (!model) throw new Error(`no model ${name}`);
    const same = JSON.stringify(model.routing) === JSON.stringify(routing);
    if (same && model.thresholdChange?.requestId === threshold?.requestId) return model;
    const next = entry(model.loaded, routing, threshold);
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

function remember(map: Map<string, string>, name: string, raw: string | undefined): void {
  if (raw === undefined) map.delete(name);
  else map.set(name, raw);
}

function entry(m: LoadedModel, routing: RoutingState, threshold?: AppliedThreshold): CatalogModel {
  return {
    name: m.manifest.name,
    manifest: threshold ? withThreshold(m.manifest, threshold) : m.manifest,
    loaded: m,
    tier: m.classification.tier,
    tierReasons: m.classification.reasons,
    ...(m.corpus ? { corpus: m.corpus } : {}),
    routing,
    version: routing.primary,
    ...(threshold ? { thresholdChange: threshold } : {}),
  };
}
