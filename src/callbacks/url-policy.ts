import { isIP } from 'node:net';
import ipaddr from 'ipaddr.js';
import { Problem } from '../platform/errors.ts';

/**
 * Where callbacks may go. At submission: the URL must be https (plain http only for hosts the operator allows, e.g.
 * loopback in development), carry no credentials, and its host must match the client's allowlist. At delivery: the
 * resolved address must not be private, loopback or link-local unless the allowlist names that very host — so a
 * public name cannot be pointed at the metadata service or the cluster network (SSRF, DNS rebinding).
 */

const MAX_URL_LENGTH = 2048;

/**
 * Only global unicast addresses are external. Classified by ipaddr.js's registry of special ranges rather than a list
 * of our own, so an IPv6 spelling of an internal IPv4 address (NAT64 `64:ff9b::/96`, 6to4 `2002::/16`, Teredo, SIIT
 * `::ffff:0:0/96`, site-local `fec0::/10`) is refused with the rest. IPv4-mapped addresses are judged by the IPv4
 * address they carry; the deprecated IPv4-compatible form (`::a.b.c.d`, `::7f00:1`), which ipaddr.js counts as
 * unicast, is refused outright: no public host is reached that way.
 */
export function isInternalAddress(address: string): boolean {
  // node:net's parser is the strict one (no `127.1` or octal shorthands); ipaddr.js only classifies
  if (isIP(address) === 0) return false;
  let parsed: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    parsed = ipaddr.parse(address);
  } catch {
    return true;
  }
  if (parsed.kind() === 'ipv6') {
    const v6 = parsed as ipaddr.IPv6;
    if (v6.isIPv4MappedAddress()) return v6.toIPv4Address().range() !== 'unicast';
    if (v6.parts.slice(0, 6).every((p) => p === 0)) return true;
  }
  return parsed.range() !== 'unicast';
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
