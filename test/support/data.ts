/** Inputs the bundled models score predictably, and where shared data sets live. */
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MODELS_DIR } from './models.ts';

export const SYNTHEA_OBSERVATIONS = fileURLToPath(
  new URL('../../../shared/data/synthea/vital-sign-observations.ndjson', import.meta.url),
);

/** Clinical notes the demonstration model classifies confidently. */
export const NOTES = {
  urgent: 'Patient reports central chest pain radiating to the left arm, troponin raised. Urgent cardiology review.',
  routine: 'Hypertension well controlled and stable on amlodipine. Repeat bloods in 3 months and review in clinic.',
  none: 'Chest X-ray normal. Bloods unremarkable. No concerns, discharged.',
};

/** A valid NEWS2 instance (scores 0). */
export const NEWS2_INSTANCE = {
  respirationRate: 16,
  spo2: 97,
  onOxygen: false,
  systolicBP: 120,
  pulse: 70,
  consciousness: 'alert',
  temperature: 37,
};

/** A valid, varied NEWS2 row (deterministic in `i`). */
export function news2Row(i: number): Record<string, unknown> {
  return {
    respirationRate: 8 + (i % 20),
    spo2: 88 + (i % 13),
    onOxygen: i % 7 === 0,
    systolicBP: 85 + ((i * 7) % 150),
    pulse: 40 + ((i * 3) % 100),
    consciousness: i % 11 === 0 ? 'voice' : 'alert',
    temperature: Math.round((34.5 + (i % 50) / 10) * 10) / 10,
  };
}

/** Writes `count` varied NEWS2 rows (ids `obs-<i>`) to `inputs/news2.ndjson` in `client`'s data area. */
export async function placeNews2Rows(dataDir: string, count: number, client = 'client'): Promise<void> {
  const rows = Array.from({ length: count }, (_, i) => JSON.stringify({ id: `obs-${i}`, ...news2Row(i) }));
  const inputs = path.join(dataDir, 'clients', client, 'inputs');
  await mkdir(inputs, { recursive: true });
  await writeFile(path.join(inputs, 'news2.ndjson'), `${rows.join('\n')}\n`);
}

/**
 * Puts the readmission model's sample discharges at `inputs/discharges.ndjson` in the data directory itself (the
 * operator's, for schedules) and in `client`'s data area (on-demand runs).
 */
export async function placeDischarges(dataDir: string, client = 'client'): Promise<void> {
  for (const dir of ['inputs', `clients/${client}/inputs`]) {
    await mkdir(path.join(dataDir, dir), { recursive: true });
    await copyFile(
      path.join(MODELS_DIR, 'readmission', 'sample-discharges.ndjson'),
      path.join(dataDir, dir, 'discharges.ndjson'),
    );
  }
}
