import type { Principal } from '../platform/auth.ts';
import { Problem } from '../platform/errors.ts';
import type { BatchRun } from './runs.ts';

/**
 * Who reads what under the data directory:
 *
 *   clients/<key id>/…   a client's own input area; the paths it sends are relative to it
 *   shared/<area>/…      areas an operator grants to several keys (`dataAreas: [<area>]` on each key entry); a client
 *                        names them as `shared/<area>/…`
 *   batches/…            run outputs: downloaded through the API only, never an input to anyone
 *
 * Anything else (a schedule's input, say) is the operator's: only admins' schedules name it.
 */
export const CLIENTS_DIR = 'clients';
export const SHARED_DIR = 'shared';

const notFound = () => new Problem('not_found', 'no such input file in your data area');

/**
 * The data-directory key of an input a client names, or a 404 — the same answer whether the file is missing, outside
 * the client's areas or another client's, so the answer tells nothing about what exists elsewhere.
 */
export function inputKeyFor(principal: Principal, requested: string): string {
  const parts = requested.split('/');
  if (requested.includes('\0') || requested.includes('\\') || requested.startsWith('/') || parts.includes('..')) {
    throw notFound();
  }
  if (parts[0] === SHARED_DIR) {
    const area = parts[1];
    if (!area || parts.length < 3 || !(principal.dataAreas ?? []).includes(area)) throw notFound();
    return requested;
  }
  return `${CLIENTS_DIR}/${principal.id}/${requested}`;
}

/** The input as its requester named it (their own area's prefix left off). */
export function displayInputPath(principal: Principal | undefined, key: string): string {
  const own = principal ? `${CLIENTS_DIR}/${principal.id}/` : undefined;
  return own && key.startsWith(own) ? key.slice(own.length) : key;
}

/**
 * A run its caller may see: an admin any; a client its own on-demand runs, and a scheduled run only when the schedule
 * names the client's key among its `readers` (a schedule scores a population: allowing the model is not enough).
 */
export function mayReadRun(principal: Principal, run: BatchRun): boolean {
  return principal.role === 'admin' || runReaders(run).includes(principal.id);
}

/** The clients who may read a run (admins aside): its requester, or a scheduled run's `readers`. */
export function runReaders(run: BatchRun): string[] {
  if (run.scheduleId !== undefined) return run.readers ?? [];
  return run.requestedBy.startsWith('api:') ? [run.requestedBy.slice('api:'.length)] : [];
}

/** A body's `input` with its path moved into the caller's area; anything malformed is left for checkInput to refuse. */
export function inClientArea(principal: Principal, input: unknown): unknown {
  const i = input as { path?: unknown } | null;
  if (typeof i !== 'object' || i === null || Array.isArray(i)) return input;
  if (typeof i.path !== 'string' || i.path.length === 0 || i.path.length > 1024) return input;
  return { ...i, path: inputKeyFor(principal, i.path) };
}
