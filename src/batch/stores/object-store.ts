import type { Readable } from 'node:stream';
import { StorageError } from '../storage.ts';

/**
 * One object store provider (S3, GCS) as the batch tier uses it: streamed reads of whole objects, streamed uploads
 * (multipart or resumable, never the whole object in memory), and time-limited signed download URLs. Which keys a
 * caller may name is decided before a store is reached (src/batch/buckets.ts).
 */
export interface ObjectStore {
  /** rejects with StorageError: 'not_found', 'outside' (a run's output), 'unreadable' */
  openRead(bucket: string, key: string): Promise<Readable>;
  size(bucket: string, key: string): Promise<number>;
  /** writes a run's output; the object is marked as one, so it is never read back as an input */
  upload(bucket: string, key: string, body: Readable, runId: string): Promise<void>;
  signedUrl(bucket: string, key: string, expiresInSeconds: number): Promise<string>;
  /** drops the client's kept-alive connections (shutdown) */
  close(): void;
}

/** User metadata on every object a run writes (S3 `x-amz-meta-…`, GCS `metadata`) */
export const OUTPUT_MARK = 'triage-run';

export const refusedOutput = () => new StorageError('outside', 'run outputs are not inputs');

/** A provider error as a StorageError; its message names neither the bucket nor the key (client-chosen). */
export function storeFailure(status: number | undefined, code: string): StorageError {
  if (status === 404) return new StorageError('not_found', 'no such object in the bucket (404)');
  return new StorageError('unreadable', `the object store refused (${status ?? 'no answer'} ${code})`.slice(0, 200));
}
