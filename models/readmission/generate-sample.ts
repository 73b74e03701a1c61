/**
 * Writes models/readmission/sample-discharges.ndjson: 200 SYNTHETIC discharges (no real patients) for batch demos,
 * one `{"id": "enc-0001", <feature>: …}` object a line, from a seeded PRNG so the file is the same on every run.
 * Five rows are deliberately bad, one problem each (out of range, wrong type, unknown field, not an integer), so a
 * run shows its error file beside the output.
 *
 *   node --import tsx models/readmission/generate-sample.ts [out]     (default: models/readmission/sample-discharges.ndjson)
 *
 * The nightly schedule reads inputs/readmission/discharges.ndjson under the data directory:
 *   node --import tsx models/readmission/generate-sample.ts data/inputs/readmission/discharges.ndjson
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { mulberry32 } from '../prng.ts';

export const SAMPLE_FILE = fileURLToPath(new URL('./sample-discharges.ndjson', import.meta.url));
export const SAMPLE_ROWS = 200;
const SEED = 20250714;

const clamp = (x: number, lo: number, hi: number) => Math.min(Math.max(x, lo), hi);
const round1 = (x: number) => Math.round(x * 10) / 10;

/** The deliberately bad rows, by row number (1-based): each breaks exactly one rule. */
export const BAD_ROWS: Readonly<Record<number, (row: Record<string, unknown>) => void>> = {
  17: (r) => {
    r.age = 17; // out of range: 18..120
  },
  58: (r) => {
    r.charlsonIndex = String(r.charlsonIndex); // wrong type: a string
  },
  101: (r) => {
    r.ward = 'B4'; // unknown field
  },
  144: (r) => {
    r.priorAdmissions12m = 2.5; // not an integer
  },
  187: (r) => {
    r.emergencyAdmission = 'yes'; // wrong type: not a boolean
  },
};

/** The file's text: the same on every call. */
export function generateSample(rows = SAMPLE_ROWS): string {
  const rand = mulberry32(SEED);
  const normal = (mean: number, sd: number) => {
    const u = 1 - rand(); // (0, 1]
    return mean + sd * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
  };
  const geometric = (mean: number) => Math.floor(-Math.log(1 - rand()) * mean);

  const lines: string[] = [];
  for (let i = 1; i <= rows; i++) {
    const age = Math.round(clamp(normal(68, 15), 18, 100));
    const emergencyAdmission = rand() < 0.6;
    const lengthOfStayDays = round1(clamp(Math.exp(normal(emergencyAdmission ? 1.5 : 1, 0.8)), 0.2, 120));
    const priorAdmissions12m = clamp(geometric(age > 75 ? 1.2 : 0.6), 0, 12);
    const charlsonIndex = clamp(geometric(1 + (age - 18) / 30), 0, 15);
    const medicationCount = Math.round(clamp(normal(5 + charlsonIndex * 1.2, 3), 0, 30));
    const dischargeToHome = rand() < (age > 80 ? 0.65 : 0.9);
    const haemoglobin = round1(clamp(normal(12.8 - 0.2 * charlsonIndex, 1.6), 6, 18));
    const sodium = Math.round(clamp(normal(139, 3.5), 120, 152));
    const row: Record<string, unknown> = {
      id: `enc-${String(i).padStart(4, '0')}`,
      age,
      lengthOfStayDays,
      priorAdmissions12m,
      charlsonIndex,
      emergencyAdmission,
      dischargeToHome,
      medicationCount,
    };
    // about one in ten discharges has no recent lab: the manifest default (a normal value) applies
    if (rand() >= 0.1) row.lastHaemoglobin = haemoglobin;
    if (rand() >= 0.1) row.lastSodium = sodium;
    BAD_ROWS[i]?.(row);
    lines.push(JSON.stringify(row));
  }
  return `${lines.join('\n')}\n`;
}

function main(): void {
  const out = resolve(process.argv[2] ?? SAMPLE_FILE);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, generateSample());
  console.log(`${out}  ${SAMPLE_ROWS} rows (${Object.keys(BAD_ROWS).length} deliberately bad)`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) main();
