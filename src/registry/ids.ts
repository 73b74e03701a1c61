import { z } from 'zod';

/** A version id: names files, metrics and routing entries. */
export const versionId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$/, 'must be 1-32 of letters, digits, . _ -');
export const sha256 = z.string().regex(/^[a-f0-9]{64}$/, 'must be 64 lower-case hex digits');

/** A code as FHIR search tokens write it: `system|code`, e.g. `http://loinc.org|8310-5`. */
export const codeToken = z.string().regex(/^[^|\s]+\|[^|\s]+$/, 'must be system|code, e.g. http://loinc.org|8310-5');
