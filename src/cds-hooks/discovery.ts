import { mappingOf } from '../fhir/mapping.ts';
import type { Manifest } from '../registry/schema.ts';
import type { CatalogModel } from '../serving/catalog.ts';

/** One CDS service: a model and one of its hooks. */
export interface CdsService {
  id: string;
  hook: string;
  title: string;
  description: string;
  prefetch: Record<string, string>;
  model: string;
}

const SERVICE_ID = /^[a-z][a-z0-9-]{0,62}-(?:patient-view|order-sign)$/;

/** Readings per feature asked for: enough to step over a few entered-in-error or preliminary ones to a usable one. */
export const READINGS_PER_FEATURE = 10;

/**
 * Prefetch templates: the Patient, and per feature read from Observations the latest few with its codes.
 * `combo-code` matches Observation.code or a component's code, so blood pressure inside a panel (85354-9 with its
 * 8480-6 component) is found too; `code=` alone would miss every panelled reading.
 */
export function prefetchTemplates(manifest: Manifest): Record<string, string> {
  const templates: Record<string, string> = { patient: 'Patient/{{context.patientId}}' };
  for (const f of manifest.features) {
    const codes = (mappingOf(f)?.observations ?? []).flatMap((s) => s.codes);
    if (codes.length === 0) continue;
    templates[`obs-${f.name}`] =
      `Observation?patient={{context.patientId}}&combo-code=${codes.join(',')}` +
      `&_sort=-date&_count=${READINGS_PER_FEATURE}`;
  }
  return templates;
}

/** The services of every served sync model that declares hooks, in catalog order. */
export function cdsServices(models: readonly CatalogModel[]): CdsService[] {
  const services: CdsService[] = [];
  for (const m of models) {
    const hooks = m.manifest.hooks;
    if (!hooks || m.tier !== 'sync') continue;
    const prefetch = prefetchTemplates(m.manifest);
    for (const s of hooks.services) {
      services.push({
        id: `${m.name}-${s.hook}`,
        hook: s.hook,
        title: s.title ?? m.manifest.title,
        description: s.description ?? m.manifest.description ?? m.manifest.title,
        prefetch,
        model: m.name,
      });
    }
  }
  return services;
}

export function validServiceId(id: string): boolean {
  return SERVICE_ID.test(id);
}
