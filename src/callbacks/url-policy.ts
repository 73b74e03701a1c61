import { BlockList, isIP } from 'node:net';
import { Problem } from '../platform/errors.ts';

/**
 * Where callbacks may go. At submission: the URL must be https (plain http only for hosts the operator allows, e.g.
 * loopback in development), carry no credentials, and its host must match the client's allowlist. At delivery: the
 * resolved address must not be private, loopback or link-local unless the allowlist names that very host — so a
 * public name cannot be pointed at the metadata service or the cluster network (SSRF, DNS rebinding).
 */

const MAX_URL_LENGTH = 2048;

const internal = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  internal.addSubnet(net, bits, 'ipv4');
}
for (const [net, bits] of [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const) {
  internal.addSubnet(net, bits, 'ipv6');
}

export function isInternalAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 0) return false;
  if (family === 6) {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
    if (mapped) return internal.check(mapped[1] as string, 'ipv4');
    return internal.check(address, 'ipv6');
  }
  return internal.check(address, 'ipv4');
}

/** URL host without IPv6 brackets, lower-case. */
export function hostOf(url: URL): string {
  return url.hostname.replace(/^\[|\]$/g, '').toLowerCase();
}

function matches(host: string, pattern: string): boolean {
  const p = pattern.toLowerCase().replace(/^\[|\]$/g, '');
  if (p.startsWith('*.')) return host.endsWith(p.slice(1)) && host.length > p.length - 1;
  return host === p;
}

/** True when the allowlist names this exact host (not by wildcard): only then may it resolve to an internal address. */
export function namedExactly(host: string, allowlist: readonly string[]): boolean {
  return allowlist.some((p) => !p.startsWith('*.') && matches(host, p));
}

export function checkCallbackUrl(raw: unknown, allowlist: readonly string[], httpHosts: readonly string[]): URL {
  const refuse = (detail: string): never => {
    throw new Problem('invalid_callback_url', detail);
  };
  if (typeof raw !== 'string' || raw.length === 0) return refuse('callbackUrl must be a URL string');
  if (raw.length > MAX_URL_LENGTH) return refuse(`callbackUrl is longer than ${MAX_URL_LENGTH} characters`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return refuse('callbackUrl is not a valid absolute URL');
  }
  if (url.username || url.password) refuse('callbackUrl must not carry credentials');
  const host = hostOf(url);
  if (url.protocol === 'http:') {
    if (!httpHosts.some((h) => matches(host, h))) refuse('callbackUrl must use https');
  } else if (url.protocol !== 'https:') {
    refuse('callbackUrl must use https');
  }
  if (allowlist.length === 0) refuse('this client has no callback hosts configured');
  if (!allowlist.some((p) => matches(host, p))) refuse('callbackUrl host is not in this client’s allowlist');
  if (isIP(host) !== 0 && isInternalAddress(host) && !namedExactly(host, allowlist)) {
    refuse('callbackUrl points at a private or link-local address');
  }
  url.hash = '';
  return url;
}
