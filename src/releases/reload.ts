import type { AuditLog } from '../platform/audit.ts';
import { Problem } from '../platform/errors.ts';
import { type LoadedModel, ManifestError } from '../registry/load.ts';
import type { CatalogModel, ModelCatalog } from '../serving/catalog.ts';
import type { ThresholdChanges } from './threshold-changes.ts';

export interface Actor {
  id: string;
  role: string;
}

const MAX_DIFF_LINES = 100;

/** The paths of a value, flattened: `versions.1.evidence.approvedThreshold` → its JSON. */
function flatten(value: unknown, at: string, out: Map<string, string>): Map<string, string> {
  if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) flatten(v, at ? `${at}.${k}` : k, out);
  } else {
    out.set(at, JSON.stringify(value));
  }
  return out;
}

/** What a reload changes in the manifests on disk, one line per changed field (`model: path: before → after`). */
export function manifestDiff(before: readonly LoadedModel[], after: readonly LoadedModel[]): string[] {
  const lines: string[] = [];
  const names = [...new Set([...before, ...after].map((m) => m.manifest.name))].sort();
  for (const name of names) {
    const b = before.find((m) => m.manifest.name === name);
    const a = after.find((m) => m.manifest.name === name);
    if (!b || !a) {
      lines.push(`${name}: ${a ? 'added' : 'removed'}`);
      continue;
    }
    const fb = flatten(b.manifest, '', new Map());
    const fa = flatten(a.manifest, '', new Map());
    for (const path of [...new Set([...fb.keys(), ...fa.keys()])].sort()) {
      const x = fb.get(path);
      const y = fa.get(path);
      if (x !== y) lines.push(`${name}: ${path}: ${x ?? '(none)'} → ${y ?? '(none)'}`);
    }
  }
  return lines.length > MAX_DIFF_LINES
    ? [...lines.slice(0, MAX_DIFF_LINES), `… ${lines.length - MAX_DIFF_LINES} more`]
    : lines;
}

/**
 * Manifest reloads (the admin endpoint and SIGHUP): governed (a threshold change needs an approved change request,
 * checked before anything is swapped in, in every process that reloads) and audited, with a diff of what changed or
 * why it was refused.
 */
export class ManifestReloads {
  readonly #catalog: ModelCatalog;
  readonly #audit: AuditLog;
  readonly #load: () => Promise<LoadedModel[]>;

  constructor(o: { catalog: ModelCatalog; audit: AuditLog; load: () => Promise<LoadedModel[]> }) {
    this.#catalog = o.catalog;
    this.#audit = o.audit;
    this.#load = o.load;
  }

  /** (bound: handed around as a function) */
  readonly reload = async (actor: Actor = { id: 'signal:SIGHUP', role: 'operator' }): Promise<string[]> => {
    const before = this.#catalog.list().map((m) => m.loaded);
    const record = (action: string, detail: string) =>
      this.#audit.append({ actor: actor.id, role: actor.role, action, target: 'models', detail });
    let loaded: LoadedModel[];
    try {
      loaded = await this.#load();
    } catch (err) {
      if (!(err instanceof ManifestError)) throw err;
      await record('manifests.reload_refused', err.message.slice(0, 4000));
      throw new Problem('invalid_manifest', err.message);
    }
    const diff = manifestDiff(before, loaded);
    let models: CatalogModel[];
    try {
      models = await this.#catalog.replace(loaded);
    } catch (err) {
      if (err instanceof Problem && err.code === 'threshold_change_unapproved') {
        await record('manifests.reload_refused', [...(err.extensions.refused as string[]), ...diff].join('\n'));
      }
      throw err;
    }
    const served = models.map((m) => `${m.name}@${m.version}`);
    await record(
      'manifests.reload',
      [`served ${served.join(',')}`, ...(diff.length > 0 ? diff : ['no change'])].join('\n'),
    );
    return served;
  };
}

/** The reload check every process registers: a threshold change needs an approved change request. */
export function governThresholds(catalog: ModelCatalog, changes: ThresholdChanges): void {
  catalog.onReload(async (next) => {
    const refused = await changes.ungoverned(catalog.list(), next);
    if (refused.length > 0) {
      throw new Problem('threshold_change_unapproved', refused.join('; '), { extensions: { refused } });
    }
  });
}
