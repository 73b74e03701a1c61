/**
 * Helpers of the authentication and rate-limit tests: an OpenID Connect issuer on a real socket (discovery document
 * and JWKS, keys generated in the test, rotatable, countable, able to go down), token signing with jose, and a gateway
 * built through the real composition root and served on a real socket, so source addresses are real.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { exportJWK, generateKeyPair, type JWK, type JWTPayload, SignJWT } from 'jose';
import type { Logger } from 'pino';
import { composeGateway, type Gateway, type GatewayConfig } from '../src/compose.ts';
import type { ApiKeyStore } from '../src/platform/auth.ts';
import { loadConfig } from '../src/platform/config.ts';
import { createLogger } from '../src/platform/logger.ts';
import type { TokenVerifier } from '../src/platform/oidc.ts';
import type { RateLimitSettings } from '../src/platform/rate-limit.ts';
import { loadModels } from '../src/registry/load.ts';
import type { WorkerKind } from '../workers/index.ts';
import { MODELS_DIR, PRESSURE_OFF_MS, REDIS_URL } from './support.ts';

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

export interface Reply {
  status: number;
  headers: Headers;
  // biome-ignore lint/suspicious/noExplicitAny: test responses are read field by field
  body: any;
  text: string;
}

export interface ServedGateway {
  gateway: Gateway;
  url: string;
  call(
    method: string,
    path: string,
    credential: string | undefined,
    body?: unknown,
    headers?: Record<string, string>,
  ): Promise<Reply>;
  close(): Promise<void>;
}

export interface ServeOptions {
  prefix: string;
  keys: ApiKeyStore;
  tokens?: TokenVerifier;
  rateLimits?: RateLimitSettings;
  now?: () => number;
  workers?: WorkerKind[];
  only?: string[];
  logger?: Logger;
}

/** A gateway through composeGateway, listening on 127.0.0.1 (a real socket: real peer addresses). */
export async function serveGateway(options: ServeOptions): Promise<ServedGateway> {
  let models = await loadModels(MODELS_DIR, 5000);
  if (options.only) models = models.filter((m) => options.only?.includes(m.manifest.name));
  const config: GatewayConfig = {
    ...loadConfig({}),
    // a busy test machine is not bedside pressure: only the bedside tests lower it (deferred work must not yield here)
    pressureThresholdMs: PRESSURE_OFF_MS,
    redisPrefix: options.prefix,
    workers: options.workers ?? [],
    warmupRuns: 3,
    warmupPolicy: 'warn',
    callbacks: { attempts: 3, backoffMs: 50, timeoutMs: 2000, httpHosts: ['127.0.0.1', 'localhost'] },
    maintenanceIntervalMs: 3_600_000,
  };
  const gateway = await composeGateway({
    config,
    logger: options.logger ?? createLogger('silent'),
    redisUrl: REDIS_URL,
    keys: options.keys,
    ...(options.tokens ? { tokens: options.tokens } : {}),
    ...(options.rateLimits ? { rateLimits: options.rateLimits } : {}),
    ...(options.now ? { now: options.now } : {}),
    models,
  });
  const server = serve({ fetch: gateway.app.fetch, hostname: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    gateway,
    url,
    async call(method, path, credential, body, headers = {}) {
      const res = await fetch(`${url}${path}`, {
        method,
        headers: {
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...(credential ? { authorization: `Bearer ${credential}` } : {}),
          ...headers,
        },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const text = await res.text();
      let parsed: unknown;
      try {
        parsed = text ? JSON.parse(text) : undefined;
      } catch {
        parsed = undefined;
      }
      return { status: res.status, headers: res.headers, body: parsed, text };
    },
    async close() {
      if ('closeAllConnections' in server) server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await gateway.close();
    },
  };
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
