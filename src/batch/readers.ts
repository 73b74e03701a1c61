import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { FhirAggregator, type PatientRow } from '../fhir/observations.ts';
import type { Feature } from '../registry/schema.ts';
import { type BatchStorage, StorageError } from './storage.ts';

/** One input row: its id and raw feature values, or why it cannot be read (FHIR rows say more: PatientRow). */
export type InputRow = PatientRow;

/** An input that no retry can mend (a malformed CSV header): the run fails at once. */
export class InputFileError extends Error {
  override name = 'InputFileError';
}

/** a longer line is a bad row, never parsed */
export const MAX_LINE = 1024 * 1024;

export function rowId(raw: unknown, fallback: string): string {
  if (typeof raw === 'string' && raw.length > 0 && raw.length <= 256) return raw;
  if (typeof raw === 'number' && Number.isFinite(raw)) return String(raw);
  return fallback;
}

/** One NDJSON line as a row: `{"id": …, <feature>: …}`; a bad line is a bad row named by its line number. */
export function ndjsonRow(text: string, line: number): InputRow {
  if (text.length > MAX_LINE) return { id: `line-${line}`, error: 'line longer than 1 MiB' };
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch {
    return { id: `line-${line}`, error: 'not valid JSON' };
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
    return { id: `line-${line}`, error: 'not a JSON object' };
  }
  const { id, ...values } = obj as Record<string, unknown>;
  return { id: rowId(id, `line-${line}`), values };
}

const LF = 10;

/**
 * NDJSON, one object per line, as the rows of each piece of the stream read: a run takes rows by the thousand, and
 * handing them over one by one (readline's line events, then an async generator step per row) cost more than parsing
 * them. Lines end as readline ends them with an unbounded crlfDelay: at `\n`, `\r\n` or a lone `\r`, a `\r\n` split
 * across two pieces being one line end; the last line needs no end. A bad line is a bad row, never a failed run.
 */
export function readNdjsonBatches(stream: Readable): AsyncGenerator<InputRow[]> {
  return ndjsonLines(stream, ndjsonRow);
}

/**
 * The non-blank lines of an NDJSON input, unparsed, a piece of the stream at a time (lines cut as readNdjsonBatches
 * cuts them): a batch run parses each straight into its chunk's features (encodeLine in src/batch/chunk.ts), and
 * reads the lines that cannot take that path as readNdjsonBatches reads them (ndjsonRow).
 */
export function readNdjsonLines(stream: Readable): AsyncGenerator<NdjsonLine[]> {
  return ndjsonLines(stream, (text, line) => ({ text, line }));
}

/** One line of an NDJSON input, not parsed yet: its text and its line number (a bad row is named by it). */
export interface NdjsonLine {
  text: string;
  line: number;
}

async function* ndjsonLines<T>(stream: Readable, make: (text: string, line: number) => T): AsyncGenerator<T[]> {
  const decoder = new StringDecoder('utf8');
  let line = 0;
  /** the text after the last line end */
  let pending = '';
  /** the last piece ended with `\r`: a `\n` opening the next one ends no line */
  let afterCr = false;
  /** the rows of the complete lines in `piece` (the text after them waits for the next piece) */
  const rowsOf = (piece: string): T[] => {
    const rows: T[] = [];
    if (piece === '') return rows;
    const fresh = afterCr && piece.charCodeAt(0) === LF ? piece.slice(1) : piece;
    afterCr = false;
    // a long line arrives in many pieces: only the new piece is searched until one holds a line end
    if (fresh.indexOf('\n') < 0 && fresh.indexOf('\r') < 0) {
      pending += fresh;
      return rows;
    }
    const text = pending + fresh;
    let start = 0;
    let cr = text.indexOf('\r');
    for (;;) {
      const lf = text.indexOf('\n', start);
      let end: number;
      let next: number;
      if (cr >= 0 && (lf < 0 || cr < lf)) {
        end = cr;
        next = text.charCodeAt(cr + 1) === LF ? cr + 2 : cr + 1;
        afterCr = next === cr + 1 && next === text.length;
        cr = text.indexOf('\r', next);
      } else if (lf >= 0) {
        end = lf;
        next = lf + 1;
      } else break;
      line++;
      const lineText = text.slice(start, end);
      if (lineText.trim() !== '') rows.push(make(lineText, line));
      start = next;
    }
    pending = text.slice(start);
    return rows;
  };
  for await (const piece of stream) {
    const rows = rowsOf(typeof piece === 'string' ? piece : decoder.write(piece as Buffer));
    if (rows.length > 0) yield rows;
  }
  const rows = rowsOf(decoder.end());
  if (pending !== '') {
    line++;
    if (pending.trim() !== '') rows.push(make(pending, line));
  }
  if (rows.length > 0) yield rows;
}

/** NDJSON rows one by one (see readNdjsonBatches). */
export async function* readNdjson(stream: Readable): AsyncGenerator<InputRow> {
  for await (const rows of readNdjsonBatches(stream)) yield* rows;
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
