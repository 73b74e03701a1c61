/**
 * AWS Signature Version 4 checking for the AWS fakes (SageMaker, S3): the signature is recomputed with
 * @smithy/signature-v4 (the SDK's own signer, a node:crypto SHA-256) over what was received, with the known test
 * credentials, and compared in constant time. Header-signed requests and presigned URLs (query-signed, with expiry).
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { SignatureV4 } from '@smithy/signature-v4';

export const TEST_CREDENTIALS = {
  accessKeyId: 'AKIDTRIAGETEST000001',
  secretAccessKey: 'triage/test/secret/0123456789abcdefghijklmn',
} as const;

class Sha256 {
  #hash: ReturnType<typeof createHash> | ReturnType<typeof createHmac>;
  constructor(secret?: string | ArrayBuffer | ArrayBufferView) {
    this.#hash = secret === undefined ? createHash('sha256') : createHmac('sha256', toBuffer(secret));
  }
  update(data: string | ArrayBuffer | ArrayBufferView): void {
    this.#hash.update(toBuffer(data));
  }
  async digest(): Promise<Uint8Array> {
    return new Uint8Array(this.#hash.digest());
  }
  reset(): void {
    throw new Error('not needed');
  }
}

function toBuffer(data: string | ArrayBuffer | ArrayBufferView): Buffer {
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return Buffer.from(data);
}

function parseAmzDate(value: string): Date | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(value);
  if (!m) return undefined;
  return new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!));
}

function sameText(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export interface SigV4Options {
  service: string;
  region: string;
  /** S3 signs the path as sent (no second URI-encoding); other services encode it again */
  uriEscapePath?: boolean;
  /** the port the fake listens on (part of the signed host header) */
  port: () => number;
  /** the fake's clock (tests move it past a presigned URL's expiry) */
  now?: () => number;
}

export type PresignedCheck = 'ok' | 'expired' | 'invalid';

export class SigV4Verifier {
  readonly #options: SigV4Options;
  readonly #secrets = new Map<string, string>([[TEST_CREDENTIALS.accessKeyId, TEST_CREDENTIALS.secretAccessKey]]);

  constructor(options: SigV4Options) {
    this.#options = options;
  }

  #signer(accessKeyId: string, secretAccessKey: string): SignatureV4 {
    return new SignatureV4({
      service: this.#options.service,
      region: this.#options.region,
      credentials: { accessKeyId, secretAccessKey },
      sha256: Sha256,
      uriEscapePath: this.#options.uriEscapePath ?? true,
    });
  }

  #request(req: IncomingMessage, url: URL, headers: Record<string, string>, query: Record<string, string | string[]>) {
    return {
      method: req.method ?? 'GET',
      protocol: 'http:',
      hostname: '127.0.0.1',
      port: this.#options.port(),
      path: url.pathname,
      query,
      headers,
    };
  }

  #query(url: URL, leaveOut: string[] = []): Record<string, string | string[]> {
    const query: Record<string, string | string[]> = {};
    for (const key of new Set(url.searchParams.keys())) {
      if (leaveOut.includes(key)) continue;
      const all = url.searchParams.getAll(key);
      query[key] = all.length === 1 ? (all[0] as string) : all;
    }
    return query;
  }

  /**
   * A request signed in its Authorization header. `body`: the bytes received, checked against a declared
   * x-amz-content-sha256 (UNSIGNED-PAYLOAD leaves them unchecked, as S3 does).
   */
  async verify(req: IncomingMessage, url: URL, body?: Buffer): Promise<boolean> {
    const auth = req.headers.authorization;
    const m =
      typeof auth === 'string'
        ? /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})$/.exec(
            auth,
          )
        : null;
    if (!m || typeof auth !== 'string') return false;
    const [, accessKeyId, day, region, service, signedHeaderList] = m as unknown as string[];
    const secretAccessKey = this.#secrets.get(accessKeyId as string);
    const amzDate = req.headers['x-amz-date'];
    if (typeof amzDate !== 'string' || !amzDate.startsWith(day as string)) return false;
    const signingDate = parseAmzDate(amzDate);
    if (!secretAccessKey || !signingDate || region !== this.#options.region || service !== this.#options.service) {
      return false;
    }
    if (Math.abs(Date.now() - signingDate.getTime()) > 5 * 60_000) return false;
    const signed = (signedHeaderList as string).split(';');
    if (!signed.includes('host') || !signed.includes('x-amz-date')) return false;
    // the body must be the one that was signed, whichever way the payload hash travelled
    const declaredHash = req.headers['x-amz-content-sha256'];
    if (
      body !== undefined &&
      typeof declaredHash === 'string' &&
      declaredHash !== 'UNSIGNED-PAYLOAD' &&
      declaredHash !== createHash('sha256').update(body).digest('hex')
    ) {
      return false;
    }
    const headers: Record<string, string> = {};
    for (const name of signed) {
      const value = req.headers[name];
      if (value === undefined) return false;
      headers[name] = Array.isArray(value) ? value.join(',') : value;
    }
    const expected = await this.#signer(accessKeyId as string, secretAccessKey).sign(
      { ...this.#request(req, url, headers, this.#query(url)), ...(body ? { body } : {}) },
      { signingDate, signableHeaders: new Set(signed) },
    );
    return sameText(String(expected.headers.authorization ?? expected.headers.Authorization), auth);
  }

  /** A presigned URL (X-Amz-* query parameters): its signature recomputed, and its X-Amz-Expires honoured. */
  async verifyPresigned(req: IncomingMessage, url: URL): Promise<PresignedCheck> {
    const p = url.searchParams;
    const credential = /^([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request$/.exec(p.get('X-Amz-Credential') ?? '');
    const signingDate = parseAmzDate(p.get('X-Amz-Date') ?? '');
    const expires = Number(p.get('X-Amz-Expires'));
    const signature = p.get('X-Amz-Signature') ?? '';
    if (p.get('X-Amz-Algorithm') !== 'AWS4-HMAC-SHA256' || !credential || !signingDate) return 'invalid';
    if (!Number.isInteger(expires) || expires < 1 || expires > 7 * 24 * 3600) return 'invalid';
    const [, accessKeyId, , region, service] = credential as unknown as string[];
    const secretAccessKey = this.#secrets.get(accessKeyId as string);
    if (!secretAccessKey || region !== this.#options.region || service !== this.#options.service) return 'invalid';
    const signed = (p.get('X-Amz-SignedHeaders') ?? '').split(';');
    const headers: Record<string, string> = {};
    for (const name of signed) {
      const value = req.headers[name];
      if (value === undefined) return 'invalid';
      headers[name] = Array.isArray(value) ? value.join(',') : value;
    }
    const query = this.#query(url, [
      'X-Amz-Algorithm',
      'X-Amz-Credential',
      'X-Amz-Date',
      'X-Amz-Expires',
      'X-Amz-SignedHeaders',
      'X-Amz-Signature',
      'X-Amz-Security-Token',
      'X-Amz-Content-Sha256',
    ]);
    // the payload hash travels in the query; the signer takes it from the header it hoists back into the query
    const payloadHash = p.get('X-Amz-Content-Sha256');
    if (payloadHash) headers['X-Amz-Content-Sha256'] = payloadHash;
    const presigned = await this.#signer(accessKeyId as string, secretAccessKey).presign(
      this.#request(req, url, headers, query),
      { signingDate, expiresIn: expires, signableHeaders: new Set(signed) },
    );
    if (!sameText(String(presigned.query?.['X-Amz-Signature'] ?? ''), signature)) return 'invalid';
    const now = this.#options.now?.() ?? Date.now();
    return now > signingDate.getTime() + expires * 1000 ? 'expired' : 'ok';
  }
}
