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

/** Where a run's predictions land in the analytics sink: Hive-style partitions by the data cut-off's day and model. */
export function analyticsObjectUrl(sink: string, run: Pick<BatchRun, 'id' | 'model' | 'asOf'>): string {
  const day = new Date(run.asOf).toISOString().slice(0, 10);
  return `${sink}/dt=${day}/model=${run.model}/${run.id}.ndjson`;
}

/**
 * Writes a completed run's predictions to the analytics sink, when one is configured and takes this kind of run.
 * One object per run, named by its id: a retried attempt overwrites it, so a run appears once.
 */
export async function publishAnalytics(run: BatchRun, local: LocalStorage, buckets: Buckets): Promise<void> {
  const sink = buckets.analytics;
  if (!sink || run.scored === 0 || (sink.runs === 'scheduled' && !run.scheduleId)) return;
  const source = await local.openOutput(`${run.dir}/output.ndjson`);
  try {
    await buckets.upload(analyticsObjectUrl(sink.url, run), source, run.id);
  } finally {
    source.destroy();
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
