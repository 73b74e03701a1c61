/**
 * The Bulk Data fake (test/fakes/bulk-fhir-fake.ts, static bearer token) serving a generated export, in its own
 * process so the memory measured in export-memory.ts is Triage's alone. Per patient: a Patient and `OBS` rounds of
 * the seven NEWS2 vital signs (Observations, LOINC-coded, UCUM units), spread over the 72 h before AS_OF, written as
 * Observation files of 50,000 lines. Prints `{"baseUrl", "token", "bytes"}` once listening.
 *
 * argv: <patients> <observation rounds per patient>
 */
import { startBulkFake } from '../../test/fakes/bulk-fhir-fake.ts';

const patients = Number(process.argv[2] ?? 10_000);
const rounds = Number(process.argv[3] ?? 1);
const AS_OF = Date.parse('2020-03-11T00:00:00Z');
const token = 'bench-static-token-0123456789';

const vitals: Array<[string, string, (i: number) => number]> = [
  ['9279-1', '/min', (i) => 12 + (i % 14)],
  ['59408-5', '%', (i) => 90 + (i % 10)],
  ['8480-6', 'mm[Hg]', (i) => 95 + (i % 60)],
  ['8867-4', '/min', (i) => 55 + (i % 70)],
  ['8310-5', 'Cel', (i) => 36 + (i % 30) / 10],
  ['3151-8', 'L/min', (i) => i % 3],
];
const lines: string[] = [];
const observationFiles: string[][] = [];
let bytes = 0;
const push = (line: string) => {
  bytes += line.length + 1;
  lines.push(line);
  if (lines.length >= 50_000) observationFiles.push(lines.splice(0));
};
const patientLines: string[] = [];
for (let p = 0; p < patients; p++) {
  const id = `bench-${p}`;
  patientLines.push(JSON.stringify({ resourceType: 'Patient', id, birthDate: '1950-01-01' }));
  for (let r = 0; r < rounds; r++) {
    const at = new Date(AS_OF - ((r + 1) * 60 * 60_000 * 70) / (rounds + 1)).toISOString();
    for (const [code, unit, value] of vitals) {
      push(
        JSON.stringify({
          resourceType: 'Observation',
          id: `${id}-${code}-${r}`,
          status: 'final',
          code: { coding: [{ system: 'http://loinc.org', code }] },
          subject: { reference: `Patient/${id}` },
          effectiveDateTime: at,
          valueQuantity: { value: value(p + r), unit, system: 'http://unitsofmeasure.org', code: unit },
        }),
      );
    }
    push(
      JSON.stringify({
        resourceType: 'Observation',
        id: `${id}-acvpu-${r}`,
        status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code: '67775-7' }] },
        subject: { reference: `Patient/${id}` },
        effectiveDateTime: at,
        valueCodeableConcept: { coding: [{ system: 'http://snomed.info/sct', code: '248234008' }] },
      }),
    );
  }
}
if (lines.length) observationFiles.push(lines.splice(0));
for (const l of patientLines) bytes += l.length + 1;

const fake = await startBulkFake({
  auth: 'bearer',
  staticToken: token,
  files: { Patient: [patientLines], Observation: observationFiles },
});
process.stdout.write(`${JSON.stringify({ baseUrl: fake.baseUrl, token, bytes })}\n`);
const stop = () => void fake.close().then(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
