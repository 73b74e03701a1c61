import type { Readable } from 'node:stream';
import { GetObjectCommand, HeadObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { StorageError } from '../storage.ts';
import { type ObjectStore, OUTPUT_MARK, refusedOutput, storeFailure } from './object-store.ts';

export interface S3Settings {
  region?: string | undefined;
  endpoint?: string | undefined;
  forcePathStyle: boolean;
}

/** multipart part size: S3's minimum is 5 MiB; two parts in flight bound what an upload holds in memory */
const PART_BYTES = 8 * 1024 * 1024;

function failure(err: unknown): StorageError {
  if (err instanceof StorageError) return err;
  if (err instanceof S3ServiceException) return storeFailure(err.$metadata.httpStatusCode, err.name);
  return storeFailure(undefined, (err as NodeJS.ErrnoException).code ?? 'network');
}

/** S3 (and S3-compatible stores) through the AWS SDK v3; credentials from the SDK's default chain. */
export class S3Store implements ObjectStore {
  readonly #client: S3Client;

  constructor(settings: S3Settings) {
    this.#client = new S3Client({
      ...(settings.region ? { region: settings.region } : {}),
      ...(settings.endpoint ? { endpoint: settings.endpoint } : {}),
      forcePathStyle: settings.forcePathStyle,
      // checksums only where S3 requires them: S3-compatible stores do not all accept the newer aws-chunked trailers
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 3,
    });
  }

  async openRead(bucket: string, key: string): Promise<Readable> {
    const out = await this.#client.send(new GetObjectCommand({ Bucket: bucket, Key: key })).catch((err) => {
      throw failure(err);
    });
    const body = out.Body as Readable;
    // the mark comes with the very object being read: nothing can swap it between a check and the read
    if (out.Metadata?.[OUTPUT_MARK]) {
      body.destroy();
      throw refusedOutput();
    }
    return body;
  }

  async size(bucket: string, key: string): Promise<number> {
    const head = await this.#client.send(new HeadObjectCommand({ Bucket: bucket, Key: key })).catch((err) => {
      throw failure(err);
    });
    if (head.Metadata?.[OUTPUT_MARK]) throw refusedOutput();
    return head.ContentLength ?? 0;
  }

  /** lib-storage's Upload: one PutObject when small, else a multipart upload, parts streamed from `body` */
  async upload(bucket: string, key: string, body: Readable, runId: string): Promise<void> {
    const upload = new Upload({
      client: this.#client,
      params: {
        Bucket: bucket,
        Key: key,
        Body: body,
        ContentType: key.endsWith('.json') ? 'application/json' : 'application/fhir+ndjson',
        Metadata: { [OUTPUT_MARK]: runId },
      },
      partSize: PART_BYTES,
      queueSize: 2,
      leavePartsOnError: false,
    });
    await upload.done().catch((err) => {
      throw failure(err);
    });
  }

  close(): void {
    this.#client.destroy();
  }

  signedUrl(bucket: string, key: string, expiresInSeconds: number): Promise<string> {
    return getSignedUrl(this.#client, new GetObjectCommand({ Bucket: bucket, Key: key }), {
      expiresIn: expiresInSeconds,
    });
  }
}
