import type { Readable } from 'node:stream';
import type { Principal } from '../platform/auth.ts';
import { type BucketConfig, type ObjectStoresConfig, parseObjectStores } from './bucket-config.ts';
import { CLIENTS_DIR, SHARED_DIR } from './data-areas.ts';
import { type BatchStorage, isObjectUrl, type LocalStorage, StorageError } from './storage.ts';
import { GcsStore } from './stores/gcs.ts';
import type { ObjectStore } from './stores/object-store.ts';
import { S3Store } from './stores/s3.ts';

/**
 * Batch inputs and outputs in S3 and GCS buckets, named `s3://bucket/key` and `gs://bucket/key`. Inside a bucket the
 * same areas hold as in the data directory: a client reads and writes only under `clients/<key id>/` and the
 * `shared/<area>/` prefixes granted to its key, and only in buckets configured for it; a run's outputs are marked
 * as such and are never read back as inputs. Every refusal is the same StorageError('outside'), answered as the
 * local storage's 404.
 */
export { isObjectUrl } from './storage.ts';

export interface ObjectLocation {
  scheme: 's3' | 'gs';
  bucket: string;
  key: string;
}

const outside = () => new StorageError('outside', 'no such object in your areas');

/**
 * The bucket and key of a URL, read literally (no URL parser: it would resolve `..` and decode `%2e`). Refuses
 * absolute and empty segments, `.` and `..`, percent-encoding (encoded traversal), backslashes and control bytes.
 */
export function parseObjectUrl(url: string): ObjectLocation {
  const m = /^(s3|gs):\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])\/(.{1,1024})$/s.exec(url);
  if (!m) throw outside();
  const key = m[3] as string;
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control bytes are what is refused
  if (/[\u0000-\u001f\u007f\\%]/.test(key)) throw outside();
  if (key.split('/').some((p) => p === '' || p === '.' || p === '..')) throw outside();
  return { scheme: m[1] as 's3' | 'gs', bucket: m[2] as string, key };
}

/** Whether a key lies in one of the principal's areas: `minDepth` segments at least (a file needs one past the area). */
function inAreas(principal: Principal, key: string, minDepth: number): boolean {
  const parts = key.split('/');
  if (parts.length < minDepth) return false;
  if (parts[0] === CLIENTS_DIR) return parts[1] === principal.id;
  if (parts[0] === SHARED_DIR) return (principal.dataAreas ?? []).includes(parts[1] as string);
  return false;
}

export class Buckets {
  readonly #buckets: Map<string, BucketConfig>;
  readonly #config: ObjectStoresConfig;
  #s3: ObjectStore | undefined;
  #gcs: ObjectStore | undefined;

  /** `stores`: providers to use instead of the SDK clients the config describes */
  constructor(config: ObjectStoresConfig, stores: { s3?: ObjectStore; gs?: ObjectStore } = {}) {
    this.#config = config;
    this.#buckets = new Map(config.buckets.map((b) => [b.url, b]));
    this.#s3 = stores.s3;
    this.#gcs = stores.gs;
  }

  /** TRIAGE_OBJECT_STORES parsed (a ConfigError names what is wrong) */
  static from(raw: string | undefined): Buckets {
    return new Buckets(parseObjectStores(raw));
  }

  get configured(): boolean {
    return this.#buckets.size > 0;
  }

  get analytics(): ObjectStoresConfig['analytics'] {
    return this.#config.analytics;
  }

  /** The provider's client, made on first use (no SDK client, no credential lookup, unless a bucket is used). */
  #store(scheme: 's3' | 'gs'): ObjectStore {
    if (scheme === 's3') {
      this.#s3 ??= new S3Store(this.#config.s3);
      return this.#s3;
    }
    this.#gcs ??= new GcsStore(this.#config.gcs);
    return this.#gcs;
  }

  /** A URL in a configured bucket: what the operator's schedules may name. */
  locate(url: string): ObjectLocation {
    const loc = parseObjectUrl(url);
    if (!this.#buckets.has(`${loc.scheme}://${loc.bucket}`)) throw outside();
    return loc;
  }

  /**
   * What a client may name: an object (`input`) or an output prefix (`output`) in a bucket configured for its key,
   * under its own or a granted shared prefix. Admins may use every configured bucket, inside the same areas.
   */
  forClient(principal: Principal, url: string, use: 'input' | 'output'): string {
    const loc = this.locate(url);
    const bucket = this.#buckets.get(`${loc.scheme}://${loc.bucket}`) as BucketConfig;
    if (principal.role !== 'admin' && !bucket.clients.includes(principal.id)) throw outside();
    if (!inAreas(principal, loc.key, use === 'input' ? 3 : 2)) throw outside();
    return url;
  }

  openRead(url: string): Promise<Readable> {
    const { scheme, bucket, key } = this.locate(url);
    return this.#store(scheme).openRead(bucket, key);
  }

  size(url: string): Promise<number> {
    const { scheme, bucket, key } = this.locate(url);
    return this.#store(scheme).size(bucket, key);
  }

  upload(url: string, body: Readable, runId: string): Promise<void> {
    const { scheme, bucket, key } = this.locate(url);
    return this.#store(scheme).upload(bucket, key, body, runId);
  }

  close(): void {
    this.#s3?.close();
    this.#gcs?.close();
  }

  signedUrl(url: string, expiresInSeconds: number): Promise<string> {
    const { scheme, bucket, key } = this.locate(url);
    return this.#store(scheme).signedUrl(bucket, key, expiresInSeconds);
  }
}

const localOnly = () => new StorageError('outside', 'objects in a bucket are read, never appended to');

/** The batch tier's storage: object URLs are read from their bucket, every other key from the data directory. */
export function withBuckets(local: LocalStorage, buckets: Buckets): BatchStorage {
  return {
    openRead: (key) => (isObjectUrl(key) ? buckets.openRead(key) : local.openRead(key)),
    size: (key) => (isObjectUrl(key) ? buckets.size(key) : local.size(key)),
    openAppend: (key, length) => (isObjectUrl(key) ? Promise.reject(localOnly()) : local.openAppend(key, length)),
    writeWhole: (key, body) => (isObjectUrl(key) ? Promise.reject(localOnly()) : local.writeWhole(key, body)),
    readWhole: (key) => (isObjectUrl(key) ? Promise.reject(localOnly()) : local.readWhole(key)),
  };
}
