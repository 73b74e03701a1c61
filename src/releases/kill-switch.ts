import type { Logger } from 'pino';
import { Gauge } from 'prom-client';
import type { AuditLog } from '../platform/audit.ts';
import type { Principal } from '../platform/auth.ts';
import { Problem } from '../platform/errors.ts';
import type { Metrics } from '../platform/metrics.ts';
import type { CatalogModel, ModelCatalog, Suspension } from '../serving/catalog.ts';

/**
 * The kill switch: suspend a model, or one of its versions, with a reason, and resume it. The suspension is stored
 * in the catalog (every replica and worker follows it within a second) and enforced by the scorer on every tier;
 * both changes are audited with who and why. A manifest release does not lift it: only a resume does.
 */
export class KillSwitch {
  readonly #catalog: ModelCatalog;
  readonly #audit: AuditLog;
  readonly #logger: Logger;
  readonly #now: () => number;

  constructor(catalog: ModelCatalog, audit: AuditLog, logger: Logger, now: () => number = Date.now, metrics?: Metrics) {
    this.#catalog = catalog;
    if (metrics) registerSuspensionGauge(metrics, () => catalog.suspensions.list());
    this.#audit = audit;
    this.#logger = logger;
    this.#now = now;
  }

  status(model: CatalogModel): Suspension[] {
    return this.#catalog.suspensions.list(model.name);
  }

  async suspend(principal: Principal, model: CatalogModel, body: { version?: unknown; reason?: unknown }) {
    const version = versionOf(model, body.version);
    const reason = reasonOf(body.reason);
    const suspension: Suspension = {
      model: model.name,
      ...(version !== undefined ? { version } : {}),
      reason,
      by: principal.id,
      at: new Date(this.#now()).toISOString(),
    };
    if (!(await this.#catalog.suspensions.suspend(suspension))) {
      throw new Problem('invalid_state', `${describe(model.name, version)} is already suspended`);
    }
    await this.#record(principal, 'model.suspend', model.name, version, reason);
    return suspension;
  }

  async resume(principal: Principal, model: CatalogModel, body: { version?: unknown; reason?: unknown }) {
    const version = versionOf(model, body.version);
    const reason = reasonOf(body.reason);
    const lifted = await this.#catalog.suspensions.resume(model.name, version);
    if (!lifted) throw new Problem('invalid_state', `${describe(model.name, version)} is not suspended`);
    await this.#record(
      principal,
      'model.resume',
      model.name,
      version,
      reason,
      `suspended ${lifted.at} by ${lifted.by}`,
    );
    return lifted;
  }

  async #record(
    p: Principal,
    action: string,
    model: string,
    version: string | undefined,
    reason: string,
    detail?: string,
  ) {
    await this.#audit.append({
      actor: p.id,
      role: p.role,
      action,
      target: version === undefined ? model : `${model}@${version}`,
      model,
      ...(version !== undefined ? { version } : {}),
      reason,
      ...(detail ? { detail } : {}),
    });
    this.#logger.warn({ model, version, action, by: p.id }, 'kill switch');
  }
}

function versionOf(model: CatalogModel, version: unknown): string | undefined {
  if (version === undefined) return undefined;
  if (typeof version !== 'string' || !model.manifest.versions.some((v) => v.version === version)) {
    throw new Problem('invalid_request', `model "${model.name}" has no version ${JSON.stringify(version)}`);
  }
  return version;
}

function reasonOf(reason: unknown): string {
  if (typeof reason !== 'string' || reason.trim().length === 0 || reason.length > 2000) {
    throw new Problem('invalid_request', 'reason is required (1-2000 characters)');
  }
  return reason;
}

const describe = (model: string, version?: string) =>
  version === undefined ? `model "${model}"` : `version "${version}" of model "${model}"`;

/** The kill switches in force, read at scrape time: 1 per suspended model (version "") or version. */
function registerSuspensionGauge(metrics: Metrics, suspended: () => Array<{ model: string; version?: string }>): void {
  new Gauge({
    name: 'triage_model_suspended',
    help: 'Kill switch in force: 1 per suspended model (version "": the whole model) or version',
    labelNames: ['model', 'version'] as const,
    registers: [metrics.registry],
    collect() {
      this.reset();
      for (const s of suspended()) this.set({ model: s.model, version: s.version ?? '' }, 1);
    },
  });
}
