import type { Feature } from '../registry/schema.ts';
import { lookedFor, mappingOf, type Source, sourcesByCode } from './mapping.ts';
import { ageAt, canonicalId, patientId } from './references.ts';
import { convert } from './ucum.ts';

/** The statuses whose values stand: `preliminary` may change, `entered-in-error` never happened. */
const USABLE = new Set(['final', 'amended', 'corrected']);
const UCUM_SYSTEM = 'http://unitsofmeasure.org';

interface Reading {
  at: number;
  value: number | boolean | string;
  ref?: string;
}

interface PatientData {
  readings: Map<string, Reading>;
  /** why readings of a feature were not used (status, unit, unmapped answer): said when the feature is missing */
  notes: Map<string, Set<string>>;
  birthDate?: unknown;
  hasPatient: boolean;
}

/** A patient's features, ready to score, or why they cannot be. */
export interface PatientRow {
  id: string;
  values?: Record<string, unknown>;
  error?: string;
  insufficient?: boolean;
  basis?: string[];
  assumed?: Array<{ feature: string; value: unknown; reason: string }>;
}

type Codings = Array<{ system?: unknown; code?: unknown }>;
const codings = (concept: unknown): Codings => {
  const c = (concept as { coding?: unknown } | undefined)?.coding;
  return Array.isArray(c) ? (c as Codings) : [];
};

/**
 * Gathers Observations and Patients into one set of features per patient: the latest usable value of each feature
 * inside the look-back window (asOf - lookback, asOf]. Holds only that aggregate, never the resources.
 */
export class FhirAggregator {
  readonly #features: readonly Feature[];
  readonly #byCode: Map<string, Source[]>;
  readonly #from: number;
  readonly #asOf: number;
  readonly #lookbackHours: number;
  readonly #patients = new Map<string, PatientData>();

  constructor(features: readonly Feature[], window: { asOf: number; lookbackHours: number }) {
    this.#features = features;
    this.#byCode = sourcesByCode(features);
    this.#asOf = window.asOf;
    this.#lookbackHours = window.lookbackHours;
    this.#from = window.asOf - window.lookbackHours * 3600_000;
  }

  #patient(id: string): PatientData {
    let p = this.#patients.get(id);
    if (!p) {
      p = { readings: new Map(), notes: new Map(), hasPatient: false };
      this.#patients.set(id, p);
    }
    return p;
  }

  /** Takes one resource; returns why it cannot be read, if so. Resources of other types are ignored. */
  add(r: Record<string, unknown>): string | undefined {
    if (r.resourceType === 'Patient') {
      if (typeof r.id !== 'string') return 'Patient without id';
      const p = this.#patient(canonicalId(r.id));
      p.hasPatient = true;
      p.birthDate = r.birthDate;
      return undefined;
    }
    if (r.resourceType !== 'Observation') return undefined;
    const id = patientId(r.subject);
    if (typeof id !== 'string') return `Observation: ${id.error}`;
    const when =
      r.effectiveDateTime ??
      r.effectiveInstant ??
      (r.effectivePeriod as { end?: unknown } | undefined)?.end ??
      r.issued;
    const at = typeof when === 'string' ? Date.parse(when) : Number.NaN;
    if (Number.isNaN(at)) return 'Observation without an effective time';
    const patient = this.#patient(id);
    if (at <= this.#from || at > this.#asOf) return undefined;
    const ref = typeof r.id === 'string' ? `Observation/${r.id}` : undefined;
    const status = typeof r.status === 'string' ? r.status : 'without status';
    const parts = [r, ...(Array.isArray(r.component) ? (r.component as Array<Record<string, unknown>>) : [])];
    for (const part of parts) {
      const taken = new Set<string>();
      for (const c of codings(part.code)) {
        for (const source of this.#byCode.get(`${c.system}|${c.code}`) ?? []) {
          const name = source.feature.name;
          if (taken.has(name)) continue;
          taken.add(name);
          if (!USABLE.has(status)) {
            this.#note(patient, name, `a reading ${status} was not used`);
            continue;
          }
          const value = this.#value(source, part);
          if (typeof value === 'object') {
            this.#note(patient, name, value.error);
            continue;
          }
          const prev = patient.readings.get(name);
          if (!prev || at > prev.at) patient.readings.set(name, { at, value, ...(ref ? { ref } : {}) });
        }
      }
    }
    return undefined;
  }

  #note(p: PatientData, feature: string, note: string): void {
    const notes = p.notes.get(feature) ?? new Set();
    if (notes.size < 3) notes.add(note);
    p.notes.set(feature, notes);
  }

  #value(source: Source, part: Record<string, unknown>): number | boolean | string | { error: string } {
    if (source.unit !== undefined) {
      const q = part.valueQuantity as { value?: unknown; code?: unknown; system?: unknown; unit?: unknown } | undefined;
      if (typeof q?.value !== 'number' || !Number.isFinite(q.value)) return { error: 'a reading had no numeric value' };
      // the UCUM code (a code without a system is read as UCUM too); else the human unit, used if it parses as UCUM
      const ucumCode = (q.system === UCUM_SYSTEM || q.system === undefined) && typeof q.code === 'string';
      const from = ucumCode ? q.code : q.unit;
      if (typeof from !== 'string') return { error: 'a reading had no unit' };
      const v = convert(q.value, from, source.unit);
      if (typeof v !== 'number') return v;
      return source.above === undefined ? v : v > source.above;
    }
    for (const c of codings(part.valueCodeableConcept)) {
      const value = source.answers?.get(`${c.system}|${c.code}`);
      if (value !== undefined) return value;
    }
    return { error: 'a reading had an answer the manifest does not map' };
  }

  /** One row per patient seen, sorted by id (a resumed run sees the same order). */
  *rows(): Generator<PatientRow> {
    for (const id of [...this.#patients.keys()].sort()) yield this.#row(id, this.#patients.get(id) as PatientData);
  }

  #row(id: string, p: PatientData): PatientRow {
    const subject = `Patient/${id}`;
    // readings that were there but unusable (status, unit, answer) are reported per feature below, not as no data
    if (p.readings.size === 0 && p.notes.size === 0) {
      return {
        id: subject,
        insufficient: true,
        error: `no data: no usable Observation of this model's features in the ${this.#lookbackHours} h look-back window before asOf`,
      };
    }
    const values: Record<string, unknown> = {};
    const basis = new Set<string>();
    const assumed: NonNullable<PatientRow['assumed']> = [];
    const missing: string[] = [];
    for (const f of this.#features) {
      const mapping = mappingOf(f);
      let found: number | boolean | string | undefined;
      let why = '';
      if (mapping?.patient === 'age') {
        const age = p.hasPatient ? ageAt(p.birthDate, this.#asOf) : { error: 'no Patient resource in the input' };
        if (typeof age === 'number') {
          found = age;
          basis.add(subject);
        } else why = age.error;
      } else {
        const r = p.readings.get(f.name);
        if (r) {
          // integer features are charted as whole numbers: round the measurement to chart precision
          found = f.type === 'integer' && typeof r.value === 'number' ? Math.round(r.value) : r.value;
          if (r.ref) basis.add(r.ref);
        } else why = [...(p.notes.get(f.name) ?? [])].join('; ');
      }
      if (found !== undefined) values[f.name] = found;
      else if (mapping?.assume) {
        values[f.name] = mapping.assume.value;
        assumed.push({ feature: f.name, value: mapping.assume.value, reason: mapping.assume.reason });
      } else missing.push(`${f.name} (looked for ${lookedFor(f)}${why ? `; ${why}` : ''})`);
    }
    if (missing.length > 0) return { id: subject, insufficient: true, error: `missing ${missing.join('; ')}` };
    return { id: subject, values, basis: [...basis], ...(assumed.length > 0 ? { assumed } : {}) };
  }
}
