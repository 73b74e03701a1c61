import { Problem } from '../platform/errors.ts';
import type { Manifest } from '../registry/schema.ts';
import { FhirAggregator, type PatientRow } from './observations.ts';
import { canonicalId } from './references.ts';

/** How far back readings count at the bedside: the hooks' window, else the batch window, else the batch default. */
export function bedsideLookbackHours(m: Manifest): number {
  return m.hooks?.lookbackHours ?? m.batch?.lookbackHours ?? 72;
}

export interface OnePatient {
  row: PatientRow;
  /** resources that could not be read, and why (an Observation without subject or time, a Patient without id) */
  unread: string[];
}

/**
 * One patient's features from a set of FHIR resources (a Bundle's entries, a CDS Hooks prefetch), through the same
 * mapping as FHIR batch runs: the latest usable reading of each feature in the bedside window before `asOf`.
 * Resources about more than one patient (or about another patient than `patientId`) are refused, never mixed.
 */
export function onePatient(
  manifest: Manifest,
  resources: Iterable<Record<string, unknown>>,
  asOf: number,
  patientId?: string,
): OnePatient {
  const lookbackHours = bedsideLookbackHours(manifest);
  const aggregate = new FhirAggregator(manifest.features, { asOf, lookbackHours });
  const unread: string[] = [];
  for (const r of resources) {
    const why = aggregate.add(r);
    if (why) unread.push(why);
  }
  const rows = [...aggregate.rows()];
  const expected = patientId === undefined ? undefined : `Patient/${canonicalId(patientId)}`;
  const others = rows.filter((r) => expected !== undefined && r.id !== expected);
  if (others.length > 0 || rows.length > 1) {
    throw new Problem(
      'invalid_input',
      expected
        ? `resources about another patient than ${expected} were given: nothing is scored from mixed records`
        : `the resources are about ${rows.length} patients: send one patient's`,
    );
  }
  const row = rows[0] ?? {
    id: expected ?? 'Patient/unknown',
    insufficient: true,
    error: `no data: no usable Observation of this model's features in the ${lookbackHours} h before now`,
  };
  return { row, unread };
}

/** The instance pointers of an invalid_input mean nothing to a FHIR client or a clinician: name the features. */
export function readingsRefused(err: unknown): unknown {
  const errors = err instanceof Problem && err.code === 'invalid_input' ? err.extensions.errors : undefined;
  if (!Array.isArray(errors)) return err;
  const named = (errors as Array<{ pointer: string; detail: string }>).map(
    (e) => `${e.pointer.split('/').pop()}: ${e.detail}`,
  );
  return new Problem('invalid_input', `readings the model does not take: ${named.join('; ')}`);
}
