import type { Manifest } from '../registry/schema.ts';

/** A threshold applied through an approved change request, as stored in Redis (one hash field per model). */
export interface AppliedThreshold {
  threshold: number;
  /** the manifest threshold it replaced: a manifest release with another threshold supersedes it */
  basedOn: number;
  requestId: string;
  proposedBy: string;
  approvedBy: string;
  at: string;
}

/** A stored threshold, if it applies to this manifest (made against its threshold, and not already its own). */
export function appliedFor(raw: string | undefined, manifest: Manifest): AppliedThreshold | undefined {
  if (!raw) return undefined;
  const applied = JSON.parse(raw) as AppliedThreshold;
  const own = manifest.output.threshold;
  return applied.basedOn === own && applied.threshold !== own ? applied : undefined;
}

/**
 * The manifest as served with an approved threshold: the output threshold, and the approved threshold of the
 * versions approved at the one it replaced (the change request is their approval at the new one).
 */
export function withThreshold(manifest: Manifest, applied: AppliedThreshold): Manifest {
  return {
    ...manifest,
    output: { ...manifest.output, threshold: applied.threshold },
    versions: manifest.versions.map((v) =>
      v.evidence?.approvedThreshold === applied.basedOn
        ? { ...v, evidence: { ...v.evidence, approvedThreshold: applied.threshold } }
        : v,
    ),
  };
}
