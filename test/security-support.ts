/**
 * Helpers of the authentication and rate-limit tests: an OpenID Connect issuer on a real socket (discovery document
 * and JWKS, keys generated in the test, rotatable, countable, able to go down), token signing with jose, and a clock
 * that moves only when told. Their gateways are `buildGateway({ listen: true, … })`: a real socket, real addresses.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from 'jose';

export interface Signer {
  kid: string;
  alg: 'RS256' | 'ES256';
  publicJwk: JWK;
  sign(claims: JWTPayload, options?: { expiresIn?: number | string; issuedAt?: number }): Promise<string>;
}

export async function makeSigner(alg: 'RS256' | 'ES256' = 'RS256'): Promise<Signer> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true });
  const kid = `k-${randomBytes(6).toString('hex')}`;
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' };
  return {
    kid,
    alg,
    publicJwk,
    sign: (claims, options = {}) => {
      const jwt = new SignJWT(claims).setProtectedHeader({ alg, kid, typ: 'JWT' });
      jwt.setIssuedAt(options.issuedAt);
      if (options.expiresIn !== undefined) jwt.setExpirationTime(options.expiresIn);
      return jwt.sign(privateKey);
    },
  };
}

/** An identity provider: `/.well-known/openid-configuration` and `/jwks` on 127.0.0.1. */
export class Issuer {
  keys: JWK[] = [];
  jwksFetches = 0;
  discoveryFetches = 0;
  down = false;
  readonly #server: http.Server;
  port = 0;

  private constructor() {
    this.#server = http.createServer((req, res) => {
      if (this.down) return void res.writeHead(503).end();
      if (req.url === '/.well-known/openid-configuration') {
        this.discoveryFetches++;
        return void res
          .writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify({ issuer: this.url, jwks_uri: `${this.url}/jwks` }));
      }
      if (req.url === '/jwks') {
        this.jwksFetches++;
        return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: this.keys }));
      }
      res.writeHead(404).end();
    });
  }

  static async start(): Promise<Issuer> {
    const issuer = new Issuer();
    await new Promise<void>((resolve) => issuer.#server.listen(0, '127.0.0.1', resolve));
    issuer.port = (issuer.#server.address() as AddressInfo).port;
    return issuer;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

/** A clock that moves only when told: rate-limit windows never depend on the machine's speed. */
export function manualClock(start = 1_800_000_000_000) {
  let t = start;
  return {
    now: () => t,
    advance: (ms: number) => {
      t += ms;
    },
  };
}

export const uniqueSubject = () => `user-${randomUUID()}`;
