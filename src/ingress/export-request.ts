import { z } from 'zod';

/**
 * A batch input that is a FHIR server's Bulk Data export rather than a file. Only the server's configured id is named
 * here: its address and credentials come from TRIAGE_FHIR_SERVERS, never from a request body.
 */
const ID = /^[A-Za-z0-9._-]{1,64}$/;
// FHIR resource type names, and `_typeFilter` queries: a type, `?`, then search parameters (no spaces, no fragments)
const RESOURCE_TYPE = /^[A-Z][A-Za-z]{1,63}$/;
const TYPE_FILTER = /^[A-Z][A-Za-z]{1,63}\?[^\s#]{1,1000}$/;

export const exportInputSchema = z
  .object({
    fhirServer: z.string().regex(ID, 'a configured FHIR server id'),
    /** system: `[base]/$export`; patient: `[base]/Patient/$export`; group: `[base]/Group/{group}/$export` */
    level: z.enum(['system', 'patient', 'group']).default('patient'),
    group: z
      .string()
      .regex(/^[A-Za-z0-9.-]{1,64}$/, 'a FHIR id')
      .optional(),
    /** what is asked for; the reader uses Patient and Observation, so those are the default */
    types: z.array(z.string().regex(RESOURCE_TYPE, 'a FHIR resource type')).min(1).max(20).optional(),
    typeFilters: z.array(z.string().regex(TYPE_FILTER, 'a _typeFilter query: Type?params')).max(20).optional(),
    /**
     * `_since`: an instant, or `last-success` (schedules): the transactionTime of the export that fed the schedule's
     * last completed run, so a nightly run asks only for what changed (the first run asks for everything)
     */
    since: z.union([z.iso.datetime({ offset: true }), z.literal('last-success')]).optional(),
  })
  .strict()
  .refine((r) => (r.level === 'group') === (r.group !== undefined), {
    message: 'group is required with level "group", and only then',
    path: ['group'],
  });
export type ExportInput = z.infer<typeof exportInputSchema>;

/** The run's input path of an export-fed run: no file, the server it names. */
export const EXPORT_PATH_PREFIX = 'fhir-export:';
export const isExportPath = (p: string) => p.startsWith(EXPORT_PATH_PREFIX);

/**
 * Which export fed a run, kept on the run and shown in its manifest: the request as sent (without credentials), the
 * server's transactionTime, the files read and the types skipped. `progress` is the server's X-Progress while the
 * export runs.
 */
export interface ExportSource {
  kind: 'fhir-bulk-export';
  request: ExportInput;
  /** `_since` as sent, when it was */
  since?: string;
  state: 'requested' | 'exporting' | 'downloaded';
  progress?: string;
  kickoffUrl?: string;
  transactionTime?: string;
  files?: Array<{ type: string; count: number; bytes: number }>;
  skippedTypes?: string[];
}
