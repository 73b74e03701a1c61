import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import type { Manifest } from './schema.ts';

/**
 * A version's reference profile: how its reference data (the population it was built or validated on) falls into
 * bins per input feature, made at model build (`npm run models:build`) and saved beside the version as
 * `<version>/reference-profile.json`. Monitoring compares live traffic with it (population stability index).
 * Counts of bins only: nothing in it identifies a patient.
 */
export const referenceProfileSchema = z.object({
  // what it was built for (informational: a model folder copied under another name keeps its profiles)
  model: z.string(),
  version: z.string(),
  /** where the reference data came from, in words */
  source: z.string().min(1),
  rows: z.number().int().positive(),
  features: z.record(
    z.string(),
    z
      .object({
        /** ascending cut points of the encoded value: bin i holds values v with edges[i-1] <= v < edges[i] */
        edges: z.array(z.number()).max(63),
        /** the reference share of each bin (edges.length + 1 of them, summing to 1) */
        expected: z.array(z.number().min(0).max(1)),
      })
      .refine((f) => f.expected.length === f.edges.length + 1, 'expected needs one share more than edges')
      .refine((f) => f.edges.every((e, i) => i === 0 || e > (f.edges[i - 1] as number)), 'edges must ascend')
      .refine((f) => Math.abs(f.expected.reduce((a, b) => a + b, 0) - 1) < 1e-6, 'expected must sum to 1'),
  ),
  /**
   * The version's own scores on the reference data: the share in each bin of the monitoring output histogram
   * (equal-width bins over the score's range), the distribution live scores are drawn against
   */
  output: z
    .object({ expected: z.array(z.number().min(0).max(1)).min(1).max(64) })
    .refine((o) => Math.abs(o.expected.reduce((a, b) => a + b, 0) - 1) < 1e-3, 'output.expected must sum to 1')
    .optional(),
});

export type ReferenceProfile = z.infer<typeof referenceProfileSchema>;

export const PROFILE_FILE = 'reference-profile.json';

/** The profile saved with a version, if any; a profile that does not fit the manifest is an error naming the file. */
export async function readProfile(
  dir: string,
  m: Manifest,
  version: string,
  fail: (field: string, message: string) => never,
): Promise<ReferenceProfile | undefined> {
  const file = path.join(dir, version, PROFILE_FILE);
  const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw err;
  });
  if (text === undefined) return undefined;
  const where = `${version}/${PROFILE_FILE}`;
  const parsed = referenceProfileSchema.safeParse(JSON.parse(text));
  if (!parsed.success) return fail(where, parsed.error.issues[0]?.message ?? 'invalid');
  const names = new Set(m.features.map((f) => f.name));
  for (const name of Object.keys(parsed.data.features)) {
    if (!names.has(name)) fail(where, `profiles feature "${name}", which the manifest does not declare`);
  }
  return parsed.data;
}
