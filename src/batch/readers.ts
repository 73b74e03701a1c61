import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { FhirAggregator, type PatientRow } from '../fhir/observations.ts';
import type { Feature } from '../registry/schema.ts';
import { type BatchStorage, StorageError } from './storage.ts';

/** One input row: its id and raw feature values, or why it cannot be read (FHIR rows say more: PatientRow). */
export type InputRow = PatientRow;

/** An input that no retry can mend (a malformed CSV header): the run fails at once. */
export class InputFileError extends Error {
  override name = 'InputFileError';
}

const MAX_LINE = 1024 * 1024;

function rowId(raw: unknown, fallback: string): string {
  if (typeof raw === 'string' && raw.length > 0 && raw.length <= 256) return raw;
  if (typeof raw === 'number' && Number.isFinite(raw)) return String(raw);
  return fallback;
}

/** NDJSON, one object per line: `{"id": …, <feature>: …}`. A bad line is a bad row, never a failed run. */
export async function* readNdjson(stream: Readable): AsyncGenerator<InputRow> {
  let line = 0;
  for await (const text of createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY })) {
    line++;
    if (text.trim() === '') continue;
    const fallback = `line-${line}`;
    if (text.length > MAX_LINE) {
      yield { id: fallback, error: 'line longer than 1 MiB' };
      continue;
    }
    let obj: unknown;
    try {
      obj = JSON.parse(text);
    } catch {
      yield { id: fallback, error: 'not valid JSON' };
      continue;
    }
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
      yield { id: fallback, error: 'not a JSON object' };
      continue;
    }
    const { id, ...values } = obj as Record<string, unknown>;
    yield { id: rowId(id, fallback), values };
  }
}

/**
 * CSV with a header row of feature names (and optionally `id`); cells are typed by the model's features. One record
 * per line (RFC 4180 quoting within a line; a quoted cell cannot span lines), so a malformed row is a bad row named
 * by its line, never a parse error that fails the run, and never more than a line is held in memory.
 */
export async function* readCsv(stream: Readable, features: readonly Feature[]): AsyncGenerator<InputRow> {
  const byName = new Map(features.map((f) => [f.name, f]));
  let header: string[] | undefined;
  let line = 0;
  for await (const text of createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY })) {
    line++;
    const content = line === 1 ? text.replace(/^\uFEFF/, '') : text;
    if (content.trim() === '') continue;
    const fallback = `line-${line}`;
    const record = content.length > MAX_LINE ? undefined : splitCsvLine(content);
    if (!header) {
      if (!record) throw new InputFileError(`the CSV header (line ${line}) cannot be parsed`);
      header = record;
      continue;
    }
    if (!record) {
      yield { id: fallback, error: content.length > MAX_LINE ? 'line longer than 1 MiB' : 'malformed CSV quoting' };
      continue;
    }
    if (record.length !== header.length) {
      yield { id: fallback, error: `expected ${header.length} cells, got ${record.length}` };
      continue;
    }
    const values: Record<string, unknown> = {};
    let id = fallback;
    header.forEach((column, i) => {
      const cell = record[i] as string;
      if (column === 'id') id = rowId(cell, fallback);
      else if (cell !== '') values[column] = typeCell(cell, byName.get(column));
    });
    yield { id, values };
  }
}

/** One CSV line's cells, trimmed (`"…"` quoting, `""` an escaped quote); undefined when its quoting is malformed. */
function splitCsvLine(text: string): string[] | undefined {
  const cells: string[] = [];
  let i = 0;
  for (;;) {
    while (text[i] === ' ' || text[i] === '\t') i++;
    if (text[i] === '"') {
      let cell = '';
      i++;
      for (;;) {
        const quote = text.indexOf('"', i);
        if (quote < 0) return undefined; // not closed
        cell += text.slice(i, quote);
        i = quote + 1;
        if (text[i] !== '"') break;
        cell += '"';
        i++;
      }
      while (text[i] === ' ' || text[i] === '\t') i++;
      if (i < text.length && text[i] !== ',') return undefined; // text after the closing quote
      cells.push(cell);
    } else {
      const comma = text.indexOf(',', i);
      const end = comma < 0 ? text.length : comma;
      const cell = text.slice(i, end).trim();
      if (cell.includes('"')) return undefined; // a quote inside an unquoted cell
      cells.push(cell);
      i = end;
    }
    if (i >= text.length) return cells;
    i++; // past the comma
  }
}

function typeCell(cell: string, feature: Feature | undefined): unknown {
  if (!feature) return cell; // unknown column: refused by validation, like an unknown JSON field
  if (feature.type === 'number' || feature.type === 'integer')
    return /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(cell) ? Number(cell) : cell;
  if (feature.type === 'boolean') {
    if (/^(true|1|yes)$/i.test(cell)) return true;
    if (/^(false|0|no)$/i.test(cell)) return false;
    return cell;
  }
  return cell;
}

/**
 * FHIR NDJSON (the Bulk Data export shape): Observations and Patients read into one row per patient (see
 * src/fhir/observations.ts), from the input and, as an export delivers them, its sibling `Patient.ndjson`. Every
 * patient seen gets a row: scored, or an error naming what is missing. Rows come out sorted by patient.
 */
export async function* readFhir(
  files: ReadonlyArray<{ name: string; stream: Readable }>,
  features: readonly Feature[],
  window: { asOf: number; lookbackHours: number },
): AsyncGenerator<InputRow> {
  const aggregate = new FhirAggregator(features, window);
  const errors: InputRow[] = [];
  for (const [i, file] of files.entries()) {
    let line = 0;
    for await (const text of createInterface({ input: file.stream, crlfDelay: Number.POSITIVE_INFINITY })) {
      line++;
      if (text.trim() === '') continue;
      const id = i === 0 ? `line-${line}` : `${file.name}:line-${line}`;
      let r: unknown;
      try {
        r = JSON.parse(text);
      } catch {
        errors.push({ id, error: 'not valid JSON' });
        continue;
      }
      if (typeof r !== 'object' || r === null || Array.isArray(r)) {
        errors.push({ id, error: 'not a JSON object' });
        continue;
      }
      const problem = aggregate.add(r as Record<string, unknown>);
      if (problem) errors.push({ id, error: problem });
    }
  }
  yield* errors;
  yield* aggregate.rows();
}

/** A FHIR input with its sibling `Patient.ndjson`, when the export has one (Patient resources may also be inline). */
export async function* readFhirInput(
  storage: BatchStorage,
  path: string,
  input: Readable,
  features: readonly Feature[],
  window: { asOf: number; lookbackHours: number },
): AsyncGenerator<InputRow> {
  const files = [{ name: path, stream: input }];
  const sibling = path.replace(/[^/]*$/, 'Patient.ndjson');
  if (sibling !== path) {
    try {
      files.push({ name: 'Patient.ndjson', stream: await storage.openRead(sibling) });
    } catch (err) {
      if (!(err instanceof StorageError && err.reason === 'not_found')) throw err;
    }
  }
  try {
    yield* readFhir(files, features, window);
  } finally {
    for (const f of files.slice(1)) f.stream.destroy();
  }
}
