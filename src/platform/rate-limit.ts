import { BlockList, isIP } from 'node:net';
import type { Context } from 'hono';
import { z } from 'zod';
import type { Principal } from './auth.ts';
import { Problem } from './errors.ts';
import type { RedisClient } from './redis.ts';

/**
 * Per-client rate limits by endpoint class, and failed-authentication throttling per source address. Both are token
 * buckets (`limit` requests per `window`, bursts up to `limit`). `predict` and `default` are counted per replica, in
 * memory: the bedside hot path pays no Redis round trip, and N replicas allow N times the limit. `submit` (jobs and
 * batch runs, which create work in Redis anyway) and authentication failures are shared by every replica through
 * Redis, so the limit holds however the load balancer spreads a client.
 */

export const limitClasses = ['predict', 'submit', 'default'] as const;
export type LimitClass = (typeof limitClasses)[number];

/** `limit` requests per `windowSeconds`; `null` = unlimited */
export type Rate = { limit: number; windowSeconds: number } | null;
export type RateLimits = Partial<Record<LimitClass, Rate>>;

const RATE = /^(\d{1,7})\/(\d{0,5})(s|m|h)$/;
const UNIT_SECONDS = { s: 1, m: 60, h: 3600 } as const;

/** `"100/1s"`, `"600/m"`, `"5000/1h"`, or `"off"`. */
export const rateSchema = z.string().transform((text, ctx): Rate => {
  if (text === 'off') return null;
  const m = RATE.exec(text.trim());
  const limit = Number(m?.[1]);
  const windowSeconds = Number(m?.[2] || 1) * UNIT_SECONDS[(m?.[3] ?? 's') as keyof typeof UNIT_SECONDS];
  if (!m || limit < 1 || windowSeconds < 1) {
    ctx.addIssue({ code: 'custom', message: 'must be "<requests>/<window>" such as 100/1s, 600/m or 5000/1h, or off' });
    return z.NEVER;
  }
  return { limit, windowSeconds };
});

export const rateLimitsSchema = z
  .object({ predict: rateSchema.optional(), submit: rateSchema.optional(), default: rateSchema.optional() })
  .strict();

export interface RateLimitSettings {
  /** per client, unless its key or token issuer says otherwise */
  classes: Record<LimitClass, Rate>;
  /** presented-but-invalid credentials per source address */
  authFailures: Rate;
  /** CIDRs of load balancers whose X-Forwarded-For is believed */
  trustedProxies: string[];
}

export interface Decision {
  allowed: boolean;
  policy: string;
  limit: number;
  windowSeconds: number;
  remaining: number;
  /** seconds until the bucket is full again */
  resetSeconds: number;
  /** seconds until one more request is allowed (0 when allowed) */
  retryAfterSeconds: number;
}

// Token counts are small numbers, so float error stays far below this; timestamps are whole milliseconds.
const EPSILON = 1e-9;

/** One token bucket step: the same arithmetic as the Redis script below. */
function step(state: { tokens: number; at: number } | undefined, now: number, limit: number, windowMs: number) {
  let tokens = state?.tokens ?? limit;
  const at = state?.at ?? now;
  if (now > at) tokens = Math.min(limit, tokens + ((now - at) * limit) / windowMs);
  const allowed = tokens >= 1 - EPSILON;
  if (allowed) tokens -= 1;
  return { allowed, tokens, at: Math.max(now, at) };
}

function decide(policy: string, rate: NonNullable<Rate>, allowed: boolean, tokens: number): Decision {
  const msPerToken = (rate.windowSeconds * 1000) / rate.limit;
  return {
    allowed,
    policy,
    limit: rate.limit,
    windowSeconds: rate.windowSeconds,
    remaining: Math.max(0, Math.floor(tokens + EPSILON)),
    resetSeconds: Math.ceil(((rate.limit - tokens) * msPerToken) / 1000 - EPSILON),
    retryAfterSeconds: allowed ? 0 : Math.max(1, Math.ceil(((1 - tokens) * msPerToken) / 1000 - EPSILON)),
  };
}

/** The IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers), plus Retry-After on a refusal. */
export function rateLimitHeaders(d: Decision): Record<string, string> {
  return {
    'ratelimit-policy': `"${d.policy}";q=${d.limit};w=${d.windowSeconds}`,
    ratelimit: `"${d.policy}";r=${d.remaining};t=${d.resetSeconds}`,
    ...(d.allowed ? {} : { 'retry-after': String(d.retryAfterSeconds) }),
  };
}

export function refusal(d: Decision, detail: string): Problem {
  return new Problem('rate_limited', detail, {
    extensions: { policy: d.policy, retryAfterSeconds: d.retryAfterSeconds },
    headers: rateLimitHeaders(d),
  });
}

const TAKE = `
-- KEYS: the bucket (hash: tokens, at); ARGV: now (ms), limit, window (ms)
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or limit
local at = tonumber(state[2]) or now
if now > at then tokens = math.min(limit, tokens + (now - at) * limit / window) end
if at > now then now = at end
local allowed = 0
if tokens >= 1 - 1e-9 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((limit - tokens) * window / limit) + 1000)
return {allowed, tostring(tokens)}
`;

interface TakeCommand {
  triageRateTake(key: string, now: number, limit: number, windowMs: number): Promise<[number, string]>;
}

const MAX_LOCAL_BUCKETS = 10_000;

export class RateLimiter {
  readonly #settings: RateLimitSettings;
  readonly #redis: RedisClient & TakeCommand;
  readonly #prefix: string;
  readonly #now: () => number;
  readonly #predict = new Map<string, { tokens: number; at: number }>();
  readonly #local = new Map<string, { tokens: number; at: number }>();
  /** source addresses refused for failed authentication, until (ms): no Redis call while they stay refused */
  readonly #blocked = new Map<string, number>();
  readonly #proxies = new BlockList();

  constructor(options: { redis: RedisClient; prefix: string; settings: RateLimitSettings; now?: () => number }) {
    this.#settings = options.settings;
    if (!('triageRateTake' in options.redis))
      options.redis.defineCommand('triageRateTake', { numberOfKeys: 1, lua: TAKE });
    this.#redis = options.redis as RedisClient & TakeCommand;
    this.#prefix = options.prefix;
    this.#now = options.now ?? Date.now;
    for (const cidr of options.settings.trustedProxies) {
      const [net = '', bits] = cidr.split('/');
      const family = isIP(net) === 6 ? 'ipv6' : 'ipv4';
      this.#proxies.addSubnet(net, Number(bits ?? (family === 'ipv6' ? 128 : 32)), family);
    }
  }

  /** The client's rate for `cls`: its own (key or issuer) if set, else the default. */
  rateOf(principal: Principal, cls: LimitClass): Rate {
    const own = principal.limits?.[cls];
    return own !== undefined ? own : this.#settings.classes[cls];
  }

  /** Takes one request from the client's bucket; undefined when the class is unlimited for it. */
  take(principal: Principal, cls: LimitClass): Decision | Promise<Decision | undefined> | undefined {
    const rate = this.rateOf(principal, cls);
    if (!rate) return undefined;
    return cls === 'submit'
      ? this.#shared(`client:${cls}:${principal.id}`, cls, rate)
      : this.#take(principal.id, cls, rate);
  }

  #take(id: string, cls: LimitClass, rate: NonNullable<Rate>): Decision {
    const key = cls === 'predict' ? id : `${cls}\u0000${id}`;
    const buckets = cls === 'predict' ? this.#predict : this.#local;
    const now = this.#now();
    const bucket = buckets.get(key);
    const next = step(bucket, now, rate.limit, rate.windowSeconds * 1000);
    if (bucket) {
      // in place: the predict path allocates as little as it can
      bucket.tokens = next.tokens;
      bucket.at = next.at;
    } else {
      if (buckets.size >= MAX_LOCAL_BUCKETS) this.#sweep(buckets, now, rate);
      buckets.set(key, { tokens: next.tokens, at: next.at });
    }
    return decide(cls, rate, next.allowed, next.tokens);
  }

  /** Forgets buckets that have refilled: an absent bucket is a full one. */
  #sweep(buckets: Map<string, { tokens: number; at: number }>, now: number, rate: NonNullable<Rate>): void {
    for (const [key, b] of buckets) {
      if (b.tokens + ((now - b.at) * rate.limit) / (rate.windowSeconds * 1000) >= rate.limit) buckets.delete(key);
    }
    if (buckets.size >= MAX_LOCAL_BUCKETS) buckets.clear();
  }

  /**
   * A shared bucket step; undefined when Redis cannot answer. The limiter fails open: a Redis outage is answered by
   * what needs Redis for real (a submission), and must not turn a 401 into a 500.
   */
  async #shared(name: string, policy: string, rate: NonNullable<Rate>): Promise<Decision | undefined> {
    try {
      const [allowed, tokens] = await this.#redis.triageRateTake(
        `${this.#prefix}:ratelimit:${name}`,
        this.#now(),
        rate.limit,
        rate.windowSeconds * 1000,
      );
      return decide(policy, rate, allowed === 1, Number(tokens));
    } catch {
      return undefined;
    }
  }

  /** Throws 429 while `address` is refused for failed authentication (checked before any credential is). */
  assertNotBlocked(address: string): void {
    const until = this.#blocked.get(address);
    if (until === undefined) return;
    const now = this.#now();
    if (until <= now) {
      this.#blocked.delete(address);
      return;
    }
    const rate = this.#settings.authFailures as NonNullable<Rate>;
    throw refusal(
      decide('auth-failures', rate, false, 1 - ((until - now) * rate.limit) / (rate.windowSeconds * 1000)),
      'too many failed authentications from this address: wait before trying again',
    );
  }

  /** Counts a failed authentication; returns the 429 to answer once the address is over its limit. */
  async authFailed(address: string): Promise<Problem | undefined> {
    const rate = this.#settings.authFailures;
    if (!rate) return undefined;
    const d = await this.#shared(`auth:${address}`, 'auth-failures', rate);
    if (!d || d.allowed) return undefined;
    if (this.#blocked.size >= MAX_LOCAL_BUCKETS) this.#blocked.clear();
    this.#blocked.set(address, this.#now() + d.retryAfterSeconds * 1000);
    return refusal(d, 'too many failed authentications from this address: wait before trying again');
  }

  /**
   * The address a request came from: the socket's peer, or, when the peer is a trusted proxy, the nearest
   * X-Forwarded-For hop that is not. IPv6 clients are counted by their /64 (one subscriber's allocation).
   */
  addressOf(c: Context): string | undefined {
    const env = c.env as { incoming?: SocketOwner; server?: { incoming?: SocketOwner } } | undefined;
    const peer = (env?.server?.incoming ?? env?.incoming)?.socket?.remoteAddress;
    if (!peer) return undefined;
    let address = unmapped(peer);
    if (this.#trusted(address)) {
      const hops = (c.req.header('x-forwarded-for') ?? '').split(',').map((h) => unmapped(h.trim()));
      for (let i = hops.length - 1; i >= 0; i--) {
        const hop = hops[i] as string;
        if (isIP(hop) === 0) break;
        address = hop;
        if (!this.#trusted(hop)) break;
      }
    }
    return isIP(address) === 6 ? ipv6Prefix64(address) : address;
  }

  #trusted(address: string): boolean {
    // BlockList.check builds a SocketAddress per call: a measurable cost on the predict path, for nothing when no
    // proxy is trusted (the usual case)
    if (this.#settings.trustedProxies.length === 0) return false;
    const family = isIP(address);
    return family !== 0 && this.#proxies.check(address, family === 6 ? 'ipv6' : 'ipv4');
  }
}

type SocketOwner = { socket?: { remoteAddress?: string } };

function unmapped(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? (m[1] as string) : address;
}

function ipv6Prefix64(address: string): string {
  const [head = '', tail = ''] = address.split('%')[0]?.split('::') ?? [];
  const left = head ? head.split(':') : [];
  const right = address.includes('::') && tail ? tail.split(':') : [];
  const groups = address.includes('::')
    ? [...left, ...Array(8 - left.length - right.length).fill('0'), ...right]
    : left;
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g || '0', 16).toString(16))
    .join(':')}::/64`;
}

/** Which limit a request counts against: by method and path, so routes need not know about limits. */
export function endpointClass(method: string, path: string, prefer: string | undefined): LimitClass {
  if (method !== 'POST') return 'default';
  if (/^\/v2\/models\/[^/]+\/infer$/.test(path)) return 'predict';
  const action = /^\/v1\/models\/[^/]+\/(predict|jobs|batches)$/.exec(path)?.[1];
  if (action !== 'predict') return action ? 'submit' : 'default';
  return prefer?.toLowerCase().includes('respond-async') ? 'submit' : 'predict';
}
