/** A FHIR id: what a Patient reference resolves to. */
const ID = /^[A-Za-z0-9\-.]{1,64}$/;

/**
 * The Patient id a subject reference points to, however it is written: `Patient/p3`, `Patient/p3/_history/2`,
 * `https://ehr.example.org/fhir/Patient/p3` or `urn:uuid:p3` (a Bundle's or an export's fullUrl) are one patient.
 * Anything else (a Group, a contained `#ref`, an identifier-only reference) is refused with the reason.
 */
export function patientId(subject: unknown): string | { error: string } {
  const ref = (subject as { reference?: unknown } | undefined)?.reference;
  if (typeof ref !== 'string' || ref.length === 0) return { error: 'subject.reference is missing' };
  const uuid = /^urn:uuid:([0-9a-fA-F-]{36})$/.exec(ref);
  if (uuid) return canonicalId(uuid[1] as string);
  const m = /(?:^|\/)([A-Z][A-Za-z]+)\/([^/]+)(?:\/_history\/[^/]+)?$/.exec(ref);
  if (!m) return { error: 'subject.reference is neither Patient/<id>, an absolute Patient URL nor urn:uuid:<id>' };
  if (m[1] !== 'Patient') return { error: `subject is a ${m[1]}, not a Patient` };
  if (!ID.test(m[2] as string)) return { error: 'subject.reference has an invalid Patient id' };
  return canonicalId(m[2] as string);
}

/** urn:uuid fullUrls are lower-case uuids: a Patient/<uuid> written in upper case is the same patient. */
export function canonicalId(id: string): string {
  return /^[0-9a-fA-F]{8}-[0-9a-fA-F-]{27}$/.test(id) ? id.toLowerCase() : id;
}

/** Whole years between a full `birthDate` (YYYY-MM-DD) and `asOf`; a partial date is not guessed at. */
export function ageAt(birthDate: unknown, asOf: number): number | { error: string } {
  if (typeof birthDate !== 'string') return { error: 'the Patient has no birthDate' };
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(birthDate);
  if (!m) return { error: 'Patient.birthDate is not a full date (YYYY-MM-DD), so age cannot be known' };
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const at = new Date(asOf);
  let age = at.getUTCFullYear() - y;
  if (at.getUTCMonth() + 1 < mo || (at.getUTCMonth() + 1 === mo && at.getUTCDate() < d)) age--;
  if (age < 0) return { error: 'Patient.birthDate is after asOf' };
  return age;
}
