import type { Logger } from 'pino';
import type { AuditLog } from '../platform/audit.ts';
import { actorOf, type Principal } from '../platform/auth.ts';
import { Problem } from '../platform/errors.ts';
import { missingEvidence } from '../registry/evidence.ts';
import type { CatalogModel, ModelCatalog } from '../serving/catalog.ts';
import type { RoutingState } from '../serving/routing.ts';

/** Whether this process can serve a version now (the sync tier: is it warm); jobs load versions on use. */
export type Servable = (model: CatalogModel, version: string) => boolean;

/**
 * Releases without redeploying: promote, roll back, canary weights and shadows. Every change checks the target's
 * release evidence, is audited (who, when, why), and goes through the catalog, which stores it for every replica
 * and worker; it lasts until the next manifest release changes the model's routing.
 */
export class ReleaseService {
  readonly #catalog: ModelCatalog;
  readonly #audit: AuditLog;
  readonly #logger: Logger;
  readonly #servable: Servable;

  constructor(catalog: ModelCatalog, audit: AuditLog, logger: Logger, servable: Servable = () => true) {
    this.#catalog = catalog;
    this.#audit = audit;
    this.#logger = logger;
    this.#servable = servable;
  }

  #evidenceOf(model: CatalogModel, version: string, purpose: string) {
    const v = model.manifest.versions.find((x) => x.version === version);
    if (!v) throw new Problem('invalid_request', `model "${model.manifest.name}" has no version "${version}"`);
    if (!this.#servable(model, version)) throw new Problem('invalid_state', `version "${version}" is not loaded`);
    if (purpose !== 'shadow' && !v.evidence) {
      throw new Problem('evidence_required', `version "${version}" has no release evidence: it cannot be ${purpose}`);
    }
    return v;
  }

  async #apply(
    principal: Principal,
    model: CatalogModel,
    routing: RoutingState,
    action: string,
    reason: unknown,
    detail: string,
  ) {
    if (typeof reason !== 'string' || reason.trim().length === 0 || reason.length > 2000) {
      throw new Problem('invalid_request', 'reason is required (1-2000 characters)');
    }
    await this.#catalog.setRouting(model.name, routing, principal.id);
    await this.#audit.append({
      ...actorOf(principal),
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

  async promote(principal: Principal, model: CatalogModel, version: unknown, reason: unknown) {
    if (typeof version !== 'string') throw new Problem('invalid_request', 'version is required');
    const v = this.#evidenceOf(model, version, 'primary');
    // a promotion is a release: the whole record a release review reads, not only what serving needs
    const missing = missingEvidence(v.evidence);
    if (missing.length > 0) {
      throw new Problem(
        'evidence_required',
        `version "${version}" cannot be promoted: its release evidence lacks ${missing.join(', ')}`,
        { extensions: { missing } },
      );
    }
    if (v.evidence && v.evidence.approvedThreshold !== model.manifest.output.threshold) {
      throw new Problem(
        'evidence_required',
        `version "${version}" was approved at threshold ${v.evidence.approvedThreshold}, the model runs at ${model.manifest.output.threshold}: change the threshold through a manifest release`,
      );
    }
    // a silent version is promoted in place: with its evidence checked, its scores are shown from now on
    if (version === model.routing.primary && !model.routing.silent)
      throw new Problem('invalid_state', `version "${version}" is already primary`);
    const { canary, silent: _silent, ...rest } = model.routing;
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

  async rollback(principal: Principal, model: CatalogModel, reason: unknown) {
    const current = model.manifest.versions.find((x) => x.version === model.routing.primary);
    const target = current?.evidence?.rollbackTarget;
    if (!target) throw new Problem('invalid_state', `version "${model.routing.primary}" declares no rollback target`);
    this.#evidenceOf(model, target, 'primary');
    const { canary: _dropped, silent: _silent, ...rest } = model.routing;
    return this.#apply(
      principal,
      model,
      { ...rest, primary: target },
      'release.rollback',
      reason,
      `primary ${model.routing.primary} → ${target}`,
    );
  }

  /**
   * Silent deployment: the version answers every request of the model and is monitored (and its outcomes joined),
   * but callers are told that no score is shown, until it is promoted with release evidence (or rolled back).
   */
  async setSilent(principal: Principal, model: CatalogModel, body: { version?: unknown; reason?: unknown }) {
    if (typeof body.version !== 'string') throw new Problem('invalid_request', 'version is required');
    this.#evidenceOf(model, body.version, 'shadow'); // like a shadow, it needs no evidence: nobody sees its scores
    const { canary: _canary, shadow, ...rest } = model.routing;
    const shadows = shadow?.versions.filter((v) => v !== body.version) ?? [];
    return this.#apply(
      principal,
      model,
      {
        ...rest,
        primary: body.version,
        silent: true,
        ...(shadow && shadows.length > 0 ? { shadow: { ...shadow, versions: shadows } } : {}),
      },
      'release.silent',
      body.reason,
      `silent ${body.version} (was primary ${model.routing.primary}${model.routing.silent ? ', silent' : ''})`,
    );
  }

  async setCanary(
    principal: Principal,
    model: CatalogModel,
    body: { version?: unknown; weight?: unknown; reason?: unknown },
  ) {
    const weight = body.weight;
    if (typeof weight !== 'number' || !Number.isFinite(weight) || weight < 0 || weight > 100) {
      throw new Problem('invalid_request', 'weight must be a number from 0 to 100 (percent of subjects)');
    }
    if (model.routing.silent) throw new Problem('invalid_state', 'the model is in silent deployment: promote it first');
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
    model: CatalogModel,
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
}
