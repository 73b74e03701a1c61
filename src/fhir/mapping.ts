import type { FhirMapping } from '../registry/fhir-mapping.ts';
import type { Feature } from '../registry/schema.ts';

/** One way a feature is read from Observations, resolved from the manifest. */
export interface Source {
  feature: Feature;
  unit?: string;
  above?: number;
  answers?: ReadonlyMap<string, string | boolean>;
}

// manifests written before `fhir` sections name plain LOINC codes and a display unit: their UCUM equivalents
const LEGACY_UNITS: Record<string, string> = {
  'breaths/min': '/min',
  'beats/min': '/min',
  mmHg: 'mm[Hg]',
  years: 'a',
};

/** A feature's mapping: its `fhir` section, or one derived from its `loinc` code(s) and unit. */
export function mappingOf(f: Feature): FhirMapping | undefined {
  if (f.fhir) return f.fhir;
  if ((f.type !== 'number' && f.type !== 'integer') || !f.loinc || !f.unit) return undefined;
  const codes = (Array.isArray(f.loinc) ? f.loinc : [f.loinc]).map((c) => `http://loinc.org|${c}`);
  return { observations: [{ codes, unit: LEGACY_UNITS[f.unit] ?? f.unit }] };
}

/** Sources by `system|code`, for looking up each coding of an Observation once. */
export function sourcesByCode(features: readonly Feature[]): Map<string, Source[]> {
  const byCode = new Map<string, Source[]>();
  for (const feature of features) {
    for (const s of mappingOf(feature)?.observations ?? []) {
      const source: Source = {
        feature,
        ...(s.unit !== undefined ? { unit: s.unit } : {}),
        ...(s.above !== undefined ? { above: s.above } : {}),
        ...(s.answers ? { answers: new Map(Object.entries(s.answers)) } : {}),
      };
      for (const code of s.codes) byCode.set(code, [...(byCode.get(code) ?? []), source]);
    }
  }
  return byCode;
}

const SYSTEMS: Record<string, string> = { 'http://loinc.org': 'LOINC', 'http://snomed.info/sct': 'SNOMED CT' };

/** What was looked for, for the error a missing feature gets: `LOINC 3151-8 or 3150-0`, `Patient.birthDate`. */
export function lookedFor(f: Feature): string {
  const m = mappingOf(f);
  if (!m) return 'no FHIR mapping is declared for it in the manifest';
  if (m.patient === 'age') return 'Patient.birthDate';
  const bySystem = new Map<string, string[]>();
  for (const s of m.observations ?? []) {
    for (const token of s.codes) {
      const [system, code] = token.split('|') as [string, string];
      bySystem.set(system, [...(bySystem.get(system) ?? []), code]);
    }
  }
  const parts = [...bySystem].map(([system, codes]) => `${SYSTEMS[system] ?? system} ${codes.join(', ')}`);
  return `a final, amended or corrected Observation coded ${parts.join('; ')}`;
}
