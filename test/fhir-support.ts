/**
 * The FHIR export the FHIR batch tests run over: the real Synthea vital-sign Observations and Patients (as a Bulk
 * Data export lays them out: Observation.ndjson beside Patient.ndjson), with the ACVPU and oxygen Observations
 * Synthea lacks made here, written the way real feeds write them.
 */
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SYNTHEA_OBSERVATIONS } from './support/index.ts';

const SYNTHEA_PATIENTS = fileURLToPath(new URL('../../shared/data/synthea/Patient.ndjson', import.meta.url));
export const AS_OF = '2020-03-11T00:00:00.000Z'; // news2's default 72 h look-back: 8-11 March 2020

// two Synthea COVID-19 admissions with every charted vital sign in the window (ids as the export spells them)
export const P_FEVER = '2fcbe29d-94f0-ec20-dcf3-740c45bc08ba'; // 9 March: RR 27.669, SpO2 78.98, SBP 118, HR 79.026, T 40.725
export const P_SEPSIS = 'a8376487-72d8-ac29-a654-91f3622cc7a4'; // 10 March: RR 26.562, SpO2 86.23, SBP 102, HR 148.25, T 41.132
export const P_TEMP_ONLY = 'a8327210-6158-2be1-fb72-553a78a0ff37'; // only a temperature in the window
export const P_NO_VITALS = 'made-here-no-vitals'; // a Patient of the export with no Observation at all

const LOINC = 'http://loinc.org';
const SCT = 'http://snomed.info/sct';
function obs(id: string, subject: string, at: string, code: string, value: Record<string, unknown>, status = 'final') {
  return JSON.stringify({
    resourceType: 'Observation',
    id,
    status,
    code: { coding: [{ system: LOINC, code }] },
    subject: { reference: subject },
    effectiveDateTime: at,
    ...value,
  });
}
const qty = (value: number, code: string) => ({
  valueQuantity: { value, unit: code, system: 'http://unitsofmeasure.org', code },
});
const answer = (code: string) => ({ valueCodeableConcept: { coding: [{ system: SCT, code }] } });

// written the way real feeds write them: three spellings of the subject reference, a unit to convert, an
// entered-in-error reading, and an arterial blood gas SaO2 that is not SpO2
const ADDED = [
  obs('acvpu-fever', `Patient/${P_FEVER}`, '2020-03-09T10:39:34+01:00', '67775-7', answer('248234008')), // alert
  obs('o2-fever', `urn:uuid:${P_FEVER}`, '2020-03-09T10:40:00+01:00', '3151-8', qty(2, 'L/min')), // on oxygen
  obs(
    'acvpu-sepsis',
    `https://ehr.example.org/fhir/Patient/${P_SEPSIS}`,
    '2020-03-10T19:10:02+01:00',
    '67775-7',
    answer('130987000'),
  ), // new confusion
  obs(
    'acvpu-error',
    `Patient/${P_SEPSIS}`,
    '2020-03-10T20:00:00+01:00',
    '67775-7',
    answer('422768004'),
    'entered-in-error',
  ),
  obs('fio2-sepsis', `Patient/${P_SEPSIS}/_history/3`, '2020-03-10T19:10:02+01:00', '3150-0', qty(21, '%')), // air
  obs('temp-degf', `Patient/${P_SEPSIS}`, '2020-03-10T20:00:00+01:00', '8310-5', qty(101.3, '[degF]')), // 38.5 Cel
  obs('sao2-abg', `Patient/${P_SEPSIS}`, '2020-03-10T21:00:00+01:00', '2708-6', qty(99, '%')), // arterial: not SpO2
  obs('acvpu-temp-only', `Patient/${P_TEMP_ONLY}`, '2020-03-09T08:15:54+01:00', '67775-7', answer('248234008')),
];

/**
 * Writes export/Observation.ndjson and export/Patient.ndjson (plus a Patient with no vitals) in the data area of the
 * test client key (`clients/client/` under `dataDir`), where its `input.path`s resolve.
 */
export async function writeExport(dataDir: string): Promise<void> {
  const exportDir = path.join(dataDir, 'clients', 'client', 'export');
  await mkdir(exportDir, { recursive: true });
  const observations = await readFile(SYNTHEA_OBSERVATIONS, 'utf8');
  await writeFile(path.join(exportDir, 'Observation.ndjson'), `${observations.trimEnd()}\n${ADDED.join('\n')}\n`);
  await copyFile(SYNTHEA_PATIENTS, path.join(exportDir, 'Patient.ndjson'));
  const extra = { resourceType: 'Patient', id: P_NO_VITALS, birthDate: '1950-02-03' };
  await writeFile(path.join(exportDir, 'Patient.ndjson'), `${JSON.stringify(extra)}\n`, { flag: 'a' });
}
