/**
 * One patient's bedside FHIR record, for the FHIR door and CDS Hooks tests: vital-sign Observations timed relative to
 * now (the bedside window is hours, not the 2020 of the Synthea export), written the way real feeds write them.
 */
const LOINC = 'http://loinc.org';
const SCT = 'http://snomed.info/sct';
const UCUM = 'http://unitsofmeasure.org';

export const minutesAgo = (m: number) => new Date(Date.now() - m * 60_000).toISOString();

export function obs(
  id: string,
  subject: string,
  minutes: number,
  code: string,
  value: Record<string, unknown>,
  status = 'final',
): Record<string, unknown> {
  return {
    resourceType: 'Observation',
    id,
    status,
    code: { coding: [{ system: LOINC, code }] },
    subject: { reference: subject },
    effectiveDateTime: minutesAgo(minutes),
    ...value,
  };
}
export const qty = (value: number, code: string) => ({ valueQuantity: { value, unit: code, system: UCUM, code } });
export const answer = (code: string) => ({ valueCodeableConcept: { coding: [{ system: SCT, code }] } });
export const ALERT = '248234008';
export const UNRESPONSIVE = '422768004';

/**
 * RR 22 (2), SpO2 93 (2), on oxygen (2), SBP 105 (1), HR 115 (2), alert (0), 101.3 [degF] = 38.5 Cel (1): NEWS2 10,
 * high, by hand from RCP Chart 1. With three spellings of the subject, an entered-in-error reading newer than the
 * final one, and an arterial SaO2 of 99% that is not SpO2.
 */
export function highRiskVitals(id: string): Record<string, unknown>[] {
  return [
    { resourceType: 'Patient', id, birthDate: '1950-02-03' },
    obs(`${id}-rr`, `Patient/${id}`, 30, '9279-1', qty(22, '/min')),
    obs(`${id}-spo2`, `https://ehr.example.org/fhir/Patient/${id}`, 30, '59408-5', qty(93, '%')),
    obs(`${id}-sao2`, `Patient/${id}`, 10, '2708-6', qty(99, '%')),
    obs(`${id}-o2`, `Patient/${id}/_history/2`, 30, '3151-8', qty(2, 'L/min')),
    obs(`${id}-sbp`, `Patient/${id}`, 30, '8480-6', qty(105, 'mm[Hg]')),
    obs(`${id}-hr`, `Patient/${id}`, 30, '8867-4', qty(115, '/min')),
    obs(`${id}-acvpu`, `Patient/${id}`, 30, '67775-7', answer(ALERT)),
    obs(`${id}-acvpu-err`, `Patient/${id}`, 5, '67775-7', answer(UNRESPONSIVE), 'entered-in-error'),
    obs(`${id}-temp`, `Patient/${id}`, 30, '8310-5', qty(101.3, '[degF]')),
  ];
}

/** The same patient's values as a /v1 predict instance. */
export const HIGH_RISK_INSTANCE = {
  respirationRate: 22,
  spo2: 93,
  spo2Scale: 1,
  onOxygen: true,
  systolicBP: 105,
  pulse: 115,
  consciousness: 'alert',
  temperature: 38.5,
};

/** RR 16, SpO2 97, air, SBP 125, HR 72, alert, 36.8: NEWS2 0, low. */
export function lowRiskVitals(id: string): Record<string, unknown>[] {
  return [
    { resourceType: 'Patient', id, birthDate: '1980-06-30' },
    obs(`${id}-rr`, `Patient/${id}`, 60, '9279-1', qty(16, '/min')),
    obs(`${id}-spo2`, `Patient/${id}`, 60, '59408-5', qty(97, '%')),
    obs(`${id}-fio2`, `Patient/${id}`, 60, '3150-0', qty(21, '%')),
    obs(`${id}-sbp`, `Patient/${id}`, 60, '8480-6', qty(125, 'mm[Hg]')),
    obs(`${id}-hr`, `Patient/${id}`, 60, '8867-4', qty(72, '/min')),
    obs(`${id}-acvpu`, `Patient/${id}`, 60, '67775-7', answer(ALERT)),
    obs(`${id}-temp`, `Patient/${id}`, 60, '8310-5', qty(36.8, 'Cel')),
  ];
}

export const bundle = (resources: Record<string, unknown>[], type = 'collection') => ({
  resourceType: 'Bundle',
  type,
  entry: resources.map((resource) => ({ resource })),
});
