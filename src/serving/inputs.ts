import { Problem } from '../platform/errors.ts';
import type { Manifest } from '../registry/schema.ts';
import { documentText, hashDocument } from './documents.ts';
import { encodeInstances } from './features.ts';

/** Most instances one async job may carry when the model sets no sync limit. */
const DEFAULT_MAX_JOB_INSTANCES = 1000;

/** Width of the model's `features` input tensor. */
export function inputWidth(manifest: Manifest): number {
  return manifest.input === 'document' ? (manifest.document?.hashBuckets ?? 0) : manifest.features.length;
}

/**
 * A job's `input` → the model's input tensor. Feature models take `{"instances": [...]}`; document models take
 * `{"text": "..."}` or `{"document": <FHIR DocumentReference>}`. Throws a 400 Problem for anything else, so bad input
 * is refused at submission and, should it reach a worker, fails at once without retries.
 */
export function prepareInput(
  manifest: Manifest,
  input: unknown,
): { data: Float32Array; rows: number; assumedRows?: number } {
  if (manifest.input === 'document' && manifest.document) {
    const text = documentText(input, manifest.document.maxChars);
    return { data: hashDocument(text, new Float32Array(manifest.document.hashBuckets)), rows: 1 };
  }
  const instances = (input as { instances?: unknown } | null)?.instances;
  if (typeof input !== 'object' || input === null || Array.isArray(input) || !Array.isArray(instances)) {
    throw new Problem('invalid_request', 'input must be {"instances": [...]}');
  }
  if (Object.keys(input).length !== 1) throw new Problem('invalid_request', 'input takes only "instances"');
  if (instances.length === 0) throw new Problem('invalid_request', '"instances" is empty');
  const max = manifest.sync?.maxInstances ?? DEFAULT_MAX_JOB_INSTANCES;
  if (instances.length > max) throw new Problem('batch_too_large', `at most ${max} instances per job`);
  const assumed = { rows: 0 };
  const data = encodeInstances(manifest.features, instances, '/input/instances', assumed);
  return { data, rows: instances.length, assumedRows: assumed.rows };
}
