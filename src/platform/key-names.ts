import { createHash } from 'node:crypto';

/**
 * A client-chosen value as a part of a Redis key name. Clients pick idempotency keys from what they have at hand
 * (an MRN and an encounter number, often), and key names are what Redis shows to anyone with SCAN, MONITOR, the slow
 * log, keyspace notifications or a memory report: so the name carries a sha256 of the value, never the value.
 * Namespaced by `purpose` so equal values used for different things never share a name.
 */
export function hashedKeyPart(purpose: string, value: string): string {
  return createHash('sha256').update(purpose).update('\0').update(value).digest('hex');
}
