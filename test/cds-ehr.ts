/**
 * An EHR for the CDS Hooks tests, on a real socket: its JWKS (`/jwks`, ES384 keys made here) and a FHIR server
 * (`/fhir/…`) that answers Patient reads and Observation searches from the records it is given, and remembers what it
 * was asked and with which Authorization.
 */
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from 'jose';

export class FakeEhr {
  readonly records = new Map<string, Record<string, unknown>[]>();
  readonly requests: Array<{ url: string; authorization: string | undefined }> = [];
  /** paths answered with this status instead (e.g. 401 for Observation searches) */
  failing: { match: RegExp; status: number } | undefined;
  keys: JWK[] = [];
  #privateKey!: CryptoKey;
  #kid = '';
  readonly #server: http.Server;
  port = 0;

  private constructor() {
    this.#server = http.createServer((req, res) => {
      const url = req.url ?? '';
      if (url === '/jwks') return void json(res, 200, { keys: this.keys });
      this.requests.push({ url, authorization: req.headers.authorization });
      if (this.failing?.match.test(url)) return void json(res, this.failing.status, {});
      const parsed = new URL(url, 'http://x');
      const read = /^\/fhir\/Patient\/([^/]+)$/.exec(parsed.pathname);
      if (read) {
        const patient = this.records
          .get(decodeURIComponent(read[1] as string))
          ?.find((r) => r.resourceType === 'Patient');
        return void json(res, patient ? 200 : 404, patient ?? { resourceType: 'OperationOutcome', issue: [] });
      }
      if (parsed.pathname === '/fhir/Observation') {
        const codes = (parsed.searchParams.get('combo-code') ?? '').split(',').map((t) => t.split('|')[1]);
        const found = (this.records.get(parsed.searchParams.get('patient') ?? '') ?? []).filter(
          (r) =>
            r.resourceType === 'Observation' &&
            (r.code as { coding: Array<{ code: string }> }).coding.some((c) => codes.includes(c.code)),
        );
        return void json(res, 200, {
          resourceType: 'Bundle',
          type: 'searchset',
          entry: found.map((resource) => ({ resource, search: { mode: 'match' } })),
        });
      }
      json(res, 404, {});
    });
  }

  static async start(): Promise<FakeEhr> {
    const ehr = new FakeEhr();
    const { publicKey, privateKey } = await generateKeyPair('ES384', { extractable: true });
    ehr.#privateKey = privateKey;
    ehr.#kid = `ehr-${randomUUID()}`;
    ehr.keys = [{ ...(await exportJWK(publicKey)), kid: ehr.#kid, alg: 'ES384', use: 'sig' }];
    await new Promise<void>((resolve) => ehr.#server.listen(0, '127.0.0.1', resolve));
    ehr.port = (ehr.#server.address() as AddressInfo).port;
    return ehr;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get issuer(): string {
    return `${this.url}/`;
  }

  /** A CDS Hooks client JWT: iss, aud, exp in 5 min, iat, jti; `claims` overrides any of them. */
  sign(aud: string, claims: JWTPayload = {}, header: { kid?: string } = {}): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ iss: this.issuer, aud, exp: now + 300, iat: now, jti: randomUUID(), ...claims })
      .setProtectedHeader({ alg: 'ES384', typ: 'JWT', kid: header.kid ?? this.#kid, jku: `${this.url}/jwks` })
      .sign(this.#privateKey);
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

function json(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/fhir+json' }).end(JSON.stringify(body));
}
