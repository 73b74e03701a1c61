import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ApiError, Storage } from '@google-cloud/storage';
import { StorageError } from '../storage.ts';
import { type ObjectStore, OUTPUT_MARK, refusedOutput, storeFailure } from './object-store.ts';

export interface GcsSettings {
  projectId?: string | undefined;
  apiEndpoint?: string | undefined;
}

/** resumable upload chunk: a multiple of 256 KiB; one chunk is held in memory while it is sent */
const CHUNK_BYTES = 8 * 1024 * 1024;

function failure(err: unknown): StorageError {
  if (err instanceof StorageError) return err;
  if (err instanceof ApiError) return storeFailure(err.code, String(err.errors?.[0]?.reason ?? 'error'));
  return storeFailure(undefined, (err as NodeJS.ErrnoException).code ?? 'network');
}

/** Google Cloud Storage through @google-cloud/storage; credentials from Application Default Credentials. */
export class GcsStore implements ObjectStore {
  readonly #storage: Storage;

  constructor(settings: GcsSettings) {
    this.#storage = new Storage({
      ...(settings.projectId ? { projectId: settings.projectId } : {}),
      // a private or compatible endpoint still gets the credentials (the library sends none to custom ones by default)
      ...(settings.apiEndpoint ? { apiEndpoint: settings.apiEndpoint, useAuthWithCustomEndpoint: true } : {}),
      retryOptions: { maxRetries: 2 },
    });
    // a service account key signs its own scoped JWTs (as Google's generated clients do), with no round trip to the
    // token endpoint; workload identity and the metadata server are unaffected
    this.#storage.authClient.useJWTAccessWithScope = true;
  }

  /** The object's generation, unless it is a run's output. */
  async #generation(bucket: string, key: string): Promise<{ generation: string; size: number }> {
    const [meta] = await this.#storage
      .bucket(bucket)
      .file(key)
      .getMetadata()
      .catch((err) => {
        throw failure(err);
      });
    if (meta.metadata?.[OUTPUT_MARK]) throw refusedOutput();
    return { generation: String(meta.generation), size: Number(meta.size ?? 0) };
  }

  async openRead(bucket: string, key: string): Promise<Readable> {
    // the generation that was checked is the one read: a replaced object is a 404, not someone else's bytes
    const { generation } = await this.#generation(bucket, key);
    const stream = this.#storage.bucket(bucket).file(key, { generation }).createReadStream({ validation: 'crc32c' });
    // the download fails only once read (a replaced object is a 404 then), with the library's error, whose message
    // quotes the bucket and the key: it leaves as a StorageError, as the checks' errors do (still `unreadable`, so the
    // run's next attempt reads the object again, as before)
    const out = new PassThrough();
    stream.on('error', (err) => out.destroy(new StorageError('unreadable', failure(err).message)));
    out.on('close', () => stream.destroy());
    return stream.pipe(out);
  }

  async size(bucket: string, key: string): Promise<number> {
    return (await this.#generation(bucket, key)).size;
  }

  /**
   * A resumable upload: the session opened first (with the object's metadata), then the bytes sent to it in chunks
   * (a lost connection resumes from the last byte the server acknowledged). Opening the session explicitly also keeps
   * the credentials on it when the endpoint is a custom one (the library's own session opening drops them there).
   */
  async upload(bucket: string, key: string, body: Readable, runId: string): Promise<void> {
    const file = this.#storage.bucket(bucket).file(key);
    const metadata = {
      contentType: key.endsWith('.json') ? 'application/json' : 'application/fhir+ndjson',
      metadata: { [OUTPUT_MARK]: runId },
    };
    try {
      const [uri] = await file.createResumableUpload({ metadata });
      await pipeline(
        body,
        file.createWriteStream({ resumable: true, uri, chunkSize: CHUNK_BYTES, validation: 'crc32c' }),
      );
    } catch (err) {
      throw failure(err);
    }
  }

  /** nothing to drop: the library keeps no connection pool of its own */
  close(): void {}

  async signedUrl(bucket: string, key: string, expiresInSeconds: number): Promise<string> {
    const [url] = await this.#storage
      .bucket(bucket)
      .file(key)
      .getSignedUrl({ version: 'v4', action: 'read', expires: Date.now() + expiresInSeconds * 1000 });
    return url;
  }
}
