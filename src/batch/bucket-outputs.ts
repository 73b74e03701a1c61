import type { Buckets } from './buckets.ts';
import { bulkManifest } from './manifest.ts';
import type { BatchRun } from './runs.ts';
import type { LocalStorage } from './storage.ts';

type Manifest = ReturnType<typeof bulkManifest>;

/**
 * A run with an output location in a bucket is scored in its own folder in the data directory as every run is
 * (appends made durable chunk by chunk, cut back to the checkpoint on a resume: what exactly-once needs, and what an
 * object store cannot do), then published: each file streamed into the bucket (S3 multipart, GCS resumable) under
 * `<output>/<run folder>/`, the folder's random part included, so no one can predict or prepare it.
 */
export function outputObjectUrl(run: Pick<BatchRun, 'output' | 'dir'>, file: string): string {
  return `${run.output}/${run.dir.split('/').pop()}/${file}`;
}

const fileName = (url: string) => url.split('/').pop() as string;

/** The files a manifest lists (only those with content), and the manifest itself. */
function publishedFiles(manifest: Manifest): string[] {
  return [...manifest.output, ...manifest.error].map((f) => fileName(f.url)).concat('manifest.json');
}

/** Uploads a completed run's files to its output location; uploading again overwrites (a retried attempt). */
export async function publishOutputs(run: BatchRun, local: LocalStorage, buckets: Buckets): Promise<void> {
  if (!run.output) return;
  for (const file of publishedFiles(bulkManifest(run, ''))) {
    const source = await local.openOutput(`${run.dir}/${file}`);
    try {
      await buckets.upload(outputObjectUrl(run, file), source, run.id);
    } finally {
      source.destroy();
    }
  }
}

/**
 * The completion manifest of a run published to a bucket: its files as time-limited signed URLs (S3 presigned GET,
 * GCS V4), fresh at each request, which need no access token of Triage's (Bulk Data's requiresAccessToken false).
 */
export async function signedManifest(
  run: BatchRun,
  manifest: Manifest,
  buckets: Buckets,
  expiresInSeconds: number,
): Promise<Manifest & { extension: { location?: string; urlExpiresInSeconds?: number } }> {
  if (!run.output) return manifest;
  const sign = async <F extends { url: string }>(f: F): Promise<F> => ({
    ...f,
    url: await buckets.signedUrl(outputObjectUrl(run, fileName(f.url)), expiresInSeconds),
  });
  return {
    ...manifest,
    requiresAccessToken: false,
    output: await Promise.all(manifest.output.map(sign)),
    error: await Promise.all(manifest.error.map(sign)),
    extension: { ...manifest.extension, location: outputObjectUrl(run, ''), urlExpiresInSeconds: expiresInSeconds },
  };
}
