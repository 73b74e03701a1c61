import { z } from 'zod';
import type { FhirMapping } from './fhir-mapping.ts';
import { codeToken, sha256, versionId } from './ids.ts';

/**
 * A version's release evidence (manifest `versions[].evidence`): what it was built and validated on, who approved it,
 * and the record a release review reads. The base (dataset version, label definition, approval, threshold, rollback
 * target) makes a version servable as primary; promotion through the API also needs the rest (`missingEvidence`).
 */

const when = z.iso.datetime({ offset: true });
const who = z.string().min(1);

/** The 18 identifiers of the HIPAA Safe Harbor method, 45 CFR 164.514(b)(2)(i)(A) to (R). */
export const SAFE_HARBOR_IDENTIFIERS = 'ABCDEFGHIJKLMNOPQR'.split('');

export const DEID_METHODS = ['HIPAA Safe Harbor', 'Expert Determination', 'No patient data'] as const;

const deidentificationSchema = z
  .object({
    /**
     * Safe Harbor or Expert Determination (45 CFR 164.514(b)); `No patient data` when none was used (a published
     * scoring rule, synthetic or hand-written data): a reviewed claim like the others
     */
    method: z.enum(DEID_METHODS),
    reviewedBy: who,
    reviewedAt: when,
    /** Safe Harbor: the identifiers removed, by their letter in 164.514(b)(2)(i): all 18 */
    identifiersRemoved: z.array(z.enum(SAFE_HARBOR_IDENTIFIERS)).optional(),
    /** Expert Determination: the expert's written determination (a reference or URI) */
    determination: z.string().min(1).optional(),
    notes: z.string().optional(),
  })
  .strict()
  .superRefine((d, ctx) => {
    const missing = SAFE_HARBOR_IDENTIFIERS.filter((l) => !d.identifiersRemoved?.includes(l));
    if (d.method === 'HIPAA Safe Harbor' && missing.length > 0) {
      ctx.addIssue({
        code: 'custom',
        message: `Safe Harbor removes all 18 identifiers: missing ${missing.join(', ')}`,
        path: ['identifiersRemoved'],
      });
    }
    if (d.method === 'Expert Determination' && !d.determination) {
      ctx.addIssue({ code: 'custom', message: "needs the expert's determination", path: ['determination'] });
    }
  });

/** Which source systems and codes feed one feature (a document model's one input is `document`). */
const lineageSchema = z
  .object({
    feature: z.string().min(1),
    sources: z
      .array(
        z
          .object({
            /** the source system, e.g. "EHR flowsheets via FHIR Observation", "PAS discharge extract" */
            system: z.string().min(1),
            /** the codes read from it, `system|code` */
            codes: z.array(codeToken).default([]),
            description: z.string().optional(),
          })
          .strict(),
      )
      .min(1),
  })
  .strict();

const clinicalReviewSchema = z
  .object({
    by: who,
    role: z.string().min(1).optional(),
    at: when,
    outcome: z.enum(['approved', 'approved-with-conditions', 'not-approved']),
    summary: z.string().min(1),
  })
  .strict();

/** A change-approval record (a CAB ticket export, a signed safety case): a file beside the manifest is hash-checked. */
const artifactSchema = z
  .object({ uri: z.string().min(1).max(2048), sha256, description: z.string().optional() })
  .strict();

export const releaseEvidenceSchema = z.object({
  datasetVersion: z.string().min(1),
  /** sha256 of the dataset version's content (the file, or its canonical export) */
  datasetSha256: sha256.optional(),
  labelDefinition: z.string().min(1).describe('phenotype or label definition'),
  approvedBy: z.string().min(1),
  approvedAt: when,
  approvedThreshold: z.number().finite(),
  rollbackTarget: z.union([versionId, z.null()]).describe('version to roll back to, or null for the first release'),
  notes: z.string().optional(),
  deidentification: deidentificationSchema.optional(),
  lineage: z.array(lineageSchema).min(1).optional(),
  clinicalReviews: z.array(clinicalReviewSchema).min(1).optional(),
  changeApprovals: z.array(artifactSchema).min(1).optional(),
});
export type ReleaseEvidence = z.infer<typeof releaseEvidenceSchema>;

/** An artifact URI without a scheme is a file beside the manifest (relative to the model folder). */
export function isLocalArtifact(uri: string): boolean {
  return !/^[A-Za-z][A-Za-z0-9+.-]*:/.test(uri);
}

/** The parts of a manifest the lineage is checked against. */
interface ManifestShape {
  input: 'features' | 'document';
  features: Array<{ name: string; loinc?: string | string[]; fhir?: FhirMapping }>;
  versions: Array<{ version: string; evidence?: ReleaseEvidence | undefined }>;
}

/** The codes a feature is read by in FHIR (its mapping's, else its LOINC codes); undefined when it names none. */
function mappedCodes(f: ManifestShape['features'][number]): Set<string> | undefined {
  const fromMapping = f.fhir?.observations?.flatMap((o) => o.codes);
  if (fromMapping?.length) return new Set(fromMapping);
  const loinc = f.loinc === undefined ? [] : Array.isArray(f.loinc) ? f.loinc : [f.loinc];
  return loinc.length ? new Set(loinc.map((c) => `http://loinc.org|${c}`)) : undefined;
}

/**
 * Lineage against the model: every entry names a real feature (once), every feature has lineage, and a feature read
 * by FHIR codes lists exactly those codes (what the data owner signed off is what the gateway reads).
 */
export function checkLineage(m: ManifestShape, ctx: z.RefinementCtx): void {
  const inputs = m.input === 'document' ? [{ name: 'document' }] : m.features;
  for (const [i, v] of m.versions.entries()) {
    const lineage = v.evidence?.lineage;
    if (!lineage) continue;
    const at = (...path: Array<string | number>) => ['versions', i, 'evidence', 'lineage', ...path];
    const seen = new Set<string>();
    for (const [j, entry] of lineage.entries()) {
      const feature = inputs.find((f) => f.name === entry.feature);
      if (!feature) {
        ctx.addIssue({ code: 'custom', message: `"${entry.feature}" is not a feature of this model`, path: at(j) });
        continue;
      }
      if (seen.has(entry.feature))
        ctx.addIssue({ code: 'custom', message: `"${entry.feature}" has lineage twice`, path: at(j) });
      seen.add(entry.feature);
      const mapped = mappedCodes(feature);
      if (!mapped) continue;
      const listed = new Set(entry.sources.flatMap((s) => s.codes));
      const absent = [...mapped].filter((c) => !listed.has(c));
      const extra = [...listed].filter((c) => !mapped.has(c));
      if (absent.length || extra.length) {
        ctx.addIssue({
          code: 'custom',
          message:
            `codes disagree with the feature's FHIR mapping` +
            (absent.length ? `: ${absent.join(', ')} read but not in the lineage` : '') +
            (extra.length ? `: ${extra.join(', ')} in the lineage but not read` : ''),
          path: at(j, 'sources'),
        });
      }
    }
    const without = inputs.filter((f) => !seen.has(f.name)).map((f) => f.name);
    if (without.length) {
      ctx.addIssue({ code: 'custom', message: `no lineage for ${without.join(', ')}`, path: at() });
    }
  }
}

/** What a version's evidence lacks for promotion, by field name (empty: complete). */
export function missingEvidence(evidence: ReleaseEvidence | undefined): string[] {
  if (!evidence) return ['evidence'];
  const missing: string[] = [];
  if (!evidence.datasetSha256) missing.push('datasetSha256');
  if (!evidence.deidentification) missing.push('deidentification');
  if (!evidence.lineage) missing.push('lineage');
  if (!evidence.clinicalReviews?.some((r) => r.outcome !== 'not-approved')) missing.push('clinicalReviews');
  if (!evidence.changeApprovals) missing.push('changeApprovals');
  return missing;
}
