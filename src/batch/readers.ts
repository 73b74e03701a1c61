import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import type { Feature } from '../registry/schema.ts';

/** One input row: its id and raw feature values, or why it cannot be read. */
export interface InputRow {
  id: string;
  values?: Record<string, unknown>;
  error?: string;
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
      if (!record) throw new Error(`the CSV header (line ${line}) cannot be parsed`);
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

/** UCUM codes accepted for the units our manifests use; an Observation in another unit is not used. */
const UCUM: Record<string, readonly string[]> = {
  'breaths/min': ['/min'],
  'beats/min': ['/min'],
  mmHg: ['mm[Hg]'],
  '%': ['%'],
  Cel: ['Cel'],
  years: ['a'],
  'g/dL': ['g/dL'],
  'mmol/L': ['mmol/L'],
};

interface Observed {
  at: number;
  value: number;
}

function loincCodes(feature: Feature): string[] {
  if (feature.type !== 'number' && feature.type !== 'integer') return [];
  if (!feature.loinc) return [];
  return Array.isArray(feature.loinc) ? feature.loinc : [feature.loinc];
}

/**
 * FHIR NDJSON (the Bulk Data export shape): Observations grouped per patient into the model's features by their
 * LOINC codes (components too, e.g. blood pressure panels), keeping each feature's latest value in the look-back
 * window ending at `asOf`. Only the per-patient aggregate is held in memory, never the file. Rows come out sorted by
 * patient, so a resumed run sees them in the same order.
 */
export async function* readFhirObservations(
  stream: Readable,
  features: readonly Feature[],
  window: { asOf: number; lookbackHours: number },
): AsyncGenerator<InputRow> {
  const byCode = new Map<string, Feature[]>();
  for (const f of features) for (const code of loincCodes(f)) byCode.set(code, [...(byCode.get(code) ?? []), f]);
  const from = window.asOf - window.lookbackHours * 3600_000;
  const patients = new Map<string, Map<string, Observed>>();
  const errors: InputRow[] = [];
  const integers = new Set(features.filter((f) => f.type === 'integer').map((f) => f.name));

  const take = (patient: string, codings: unknown, quantity: unknown, at: number) => {
    const q = quantity as { value?: unknown; code?: unknown; unit?: unknown } | undefined;
    if (typeof q?.value !== 'number' || !Number.isFinite(q.value)) return;
    for (const coding of Array.isArray(codings) ? codings : []) {
      const c = coding as { system?: unknown; code?: unknown };
      if (c.system !== 'http://loinc.org' || typeof c.code !== 'string') continue;
      for (const f of byCode.get(c.code) ?? []) {
        // a value in another unit is not used (no silent 10x errors): unknown units must match exactly
        const accepted =
          f.type === 'number' || f.type === 'integer'
            ? (UCUM[f.unit ?? ''] ?? (f.unit ? [f.unit] : undefined))
            : undefined;
        if (accepted && !accepted.includes(String(q.code ?? q.unit))) continue;
        let slot = patients.get(patient);
        if (!slot) {
          slot = new Map();
          patients.set(patient, slot);
        }
        const prev = slot.get(f.name);
        if (!prev || at > prev.at) slot.set(f.name, { at, value: q.value });
      }
    }
  };

  let line = 0;
  for await (const text of createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY })) {
    line++;
    if (text.trim() === '') continue;
    let r: Record<string, unknown>;
    try {
      r = JSON.parse(text);
    } catch {
      errors.push({ id: `line-${line}`, error: 'not valid JSON' });
      continue;
    }
    if (r?.resourceType !== 'Observation') continue;
    const patient = (r.subject as { reference?: unknown } | undefined)?.reference;
    const when = r.effectiveDateTime ?? (r.effectivePeriod as { end?: unknown } | undefined)?.end ?? r.issued;
    const at = typeof when === 'string' ? Date.parse(when) : Number.NaN;
    if (typeof patient !== 'string' || Number.isNaN(at)) {
      errors.push({ id: `line-${line}`, error: 'Observation without subject.reference or effective time' });
      continue;
    }
    if (at <= from || at > window.asOf) continue;
    take(patient, (r.code as { coding?: unknown } | undefined)?.coding, r.valueQuantity, at);
    for (const component of Array.isArray(r.component) ? r.component : []) {
      take(patient, component?.code?.coding, component?.valueQuantity, at);
    }
  }
  yield* errors;
  for (const patient of [...patients.keys()].sort()) {
    const values: Record<string, unknown> = {};
    for (const [name, o] of patients.get(patient) ?? []) {
      // integer features are charted as whole numbers: round the measurement to chart precision
      values[name] = integers.has(name) ? Math.round(o.value) : o.value;
    }
    yield { id: patient, values };
  }
}
