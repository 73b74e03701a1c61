import type { Buckets } from './buckets.ts';
import { bulkManifest, manifestRequest } from './manifest.ts';
import { releaseOf } from './review.ts';
import type { RunHold } from './review-store.ts';
import { type BatchRun, HELD_FILE, type PublishState } from './runs.ts';
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

/** Where a run's predictions land in the analytics sink: Hive-style partitions by the data cut-off's day and model. */
export function analyticsObjectUrl(
  sink: string,
  run: Pick<BatchRun, 'id' | 'model' | 'asOf'>,
  part: 'released' | 'held' = 'released',
): string {
  const day = new Date(run.asOf).toISOString().slice(0, 10);
  return `${sink}/dt=${day}/model=${run.model}/${run.id}${part === 'held' ? '.held' : ''}.ndjson`;
}

/**
 * What of a run goes to its bucket as its review stands now (a run without one: everything): the files its manifest
 * lists (and the manifest), the rows for the analytics sink, and what the bucket then holds.
 * - no review, nothing held, or approved: everything (`published`);
 * - `hold: above-threshold`, awaiting review or rejected: the rows below the threshold and the error file, with a
 *   manifest that lists only them (`partial`); the held rows and the shadow files (they score every row) never;
 * - `hold: run`, awaiting review: nothing (`awaiting_review`); rejected: nothing, ever (`withheld`).
 */
export function bucketRelease(
  run: BatchRun,
  hold: RunHold | undefined,
): { files: string[]; analytics: Array<'released' | 'held'>; state: PublishState } {
  const release = releaseOf(run, hold);
  if (release === 'awaiting_review') return { files: [], analytics: [], state: 'awaiting_review' };
  if (release === 'rejected') return { files: [], analytics: [], state: 'withheld' };
  const split = run.review === 'above-threshold';
  const released = split ? run.scored - run.above : run.scored;
  const analytics: Array<'released' | 'held'> = released > 0 ? ['released'] : [];
  if (split && release === 'open' && run.above > 0) analytics.push('held');
  return {
    files: publishedFiles(bulkManifest(run, manifestRequest(run), hold)),
    analytics,
    state: release === 'open' ? 'published' : 'partial',
  };
}

/**
 * Uploads what a run has released (bucketRelease) to its output location and the analytics sink; what an earlier
 * publication of the run already put there (its rows released at once) is not sent again, but the manifest is,
 * rewritten for the review's state. Every object has a fixed name and is overwritten whole (S3 completes a
 * multipart upload, GCS finalises a resumable one, atomically), so a retried or repeated publication leaves the
 * same objects, never a duplicate or a half-written one.
 */
export async function publishRelease(
  run: BatchRun,
  hold: RunHold | undefined,
  local: LocalStorage,
  buckets: Buckets,
): Promise<{ state: PublishState; uploaded: string[] }> {
  const now = bucketRelease(run, hold);
  // already there: the rows an above-threshold run released at once (publishRelease before its decision)
  const before = run.publishState === 'partial' ? bucketRelease(run, undefined) : undefined;
  const uploaded: string[] = [];
  const upload = async (localFile: string, url: string) => {
    const source = await local.openOutput(`${run.dir}/${localFile}`);
    try {
      await buckets.upload(url, source, run.id);
    } finally {
      source.destroy();
    }
    uploaded.push(url);
  };
  if (run.output) {
    if (now.files.length > 0) {
      // the manifest as the review stands now (the one written at completion knew no decision)
      const manifest = bulkManifest(run, manifestRequest(run), hold);
      await local.writeWhole(`${run.dir}/manifest.json`, JSON.stringify(manifest, null, 2));
    }
    for (const file of now.files) {
      if (file !== 'manifest.json' && before?.files.includes(file)) continue;
      await upload(file, outputObjectUrl(run, file));
    }
  }
  const sink = buckets.analytics;
  if (sink && (sink.runs === 'all' || run.scheduleId)) {
    for (const part of now.analytics) {
      if (before?.analytics.includes(part)) continue;
      await upload(part === 'held' ? HELD_FILE : 'output.ndjson', analyticsObjectUrl(sink.url, run, part));
    }
  }
  return { state: now.state, uploaded };
}

/**
 * Whether the bucket holds every file the run's manifest lists now: published whole, or its rows released at once
 * while the review keeps the rest (a run from before publication was recorded: published if it had no review).
 */
export function inBucket(run: BatchRun, hold: RunHold | undefined): boolean {
  if (run.publishState === undefined) return !run.review;
  return run.publishState === 'published' || (run.publishState === 'partial' && releaseOf(run, hold) === 'partial');
}

/** What a run's requester is told of its bucket: what is there, since when, and the last upload's error. */
export function publicationView(run: BatchRun) {
  if (!run.output) return undefined;
  return {
    state: run.publishState ?? (run.state === 'completed' && !run.review ? 'published' : 'pending'),
    ...(run.publishedAt ? { at: new Date(run.publishedAt).toISOString() } : {}),
    ...(run.publishError ? { error: run.publishError } : {}),
  };
}

/**
 * The completion manifest of a run published to a bucket: its files as time-limited signed URLs (S3 presigned GET,
 * GCS V4), fresh at each request, which need no access token of Triage's (Bulk Data's requiresAccessToken false).
 * Until the bucket holds what the manifest lists (an approved run whose publication is still queued, or failed) the
 * files are listed as the API's own URLs, as for a run without an output location.
 */
export async function signedManifest(
  run: BatchRun,
  hold: RunHold | undefined,
  manifest: Manifest,
  buckets: Buckets,
  expiresInSeconds: number,
): Promise<
  Manifest & {
    extension: { location?: string; urlExpiresInSeconds?: number; publication?: ReturnType<typeof publicationView> };
  }
> {
  if (!run.output) return manifest;
  const publication = publicationView(run);
  if (!inBucket(run, hold)) return { ...manifest, extension: { ...manifest.extension, publication } };
  const sign = async <F extends { url: string }>(f: F): Promise<F> => ({
    ...f,
    url: await buckets.signedUrl(outputObjectUrl(run, fileName(f.url)), expiresInSeconds),
  });
  return {
    ...manifest,
    requiresAccessToken: false,
    output: await Promise.all(manifest.output.map(sign)),
    error: await Promise.all(manifest.error.map(sign)),
    extension: {
      ...manifest.extension,
      location: outputObjectUrl(run, ''),
      urlExpiresInSeconds: expiresInSeconds,
      publication,
    },
  };
}
