import { riskAssessment } from '../fhir/risk-assessment.ts';
import { batchRef } from '../outcomes/prediction-log.ts';
import type { Feature } from '../registry/schema.ts';
import type { CatalogModel } from '../serving/catalog.ts';
import { type AssumedCount, encodeRow } from '../serving/features.ts';
import { type Prediction, predictionWriter } from '../serving/predictions.ts';
import type { Scorer } from '../serving/scorer.ts';
import { ByteLines } from './line-bytes.ts';
import { type InputRow, MAX_LINE, type NdjsonLine, ndjsonRow, rowId } from './readers.ts';
import type { BatchRun } from './runs.ts';

/** Rows per chunk (one ONNX run, one commit) when the manifest's `batch.chunkSize` does not say. */
export const DEFAULT_CHUNK_SIZE = 1024;

/**
 * What scoring one chunk makes: the bytes each file gets and the counts its checkpoint moves by. The lines are
 * encoded as the chunk is scored: a chunk waits for the commit under way, and held as strings its thousand lines
 * would outlive the young generation (copied, promoted, then collected again); as bytes they are one buffer outside
 * the heap.
 */
export interface ScoredChunk {
  /** chunks scored (more than one once merged for one commit) */
  chunks: number;
  /** input rows consumed */
  rows: number;
  scored: number;
  /** patients without the data to score (counted apart from failed rows) */
  insufficient: number;
  /** scored rows at or above the threshold */
  above: number;
  output: Buffer;
  errors: Buffer;
  held: Buffer;
  /** per shadow version, its lines */
  shadows: Array<[string, Buffer]>;
}

const NONE = Buffer.alloc(0);

/** Lines joined once, then encoded (`+=` over a thousand lines builds a rope that must be flattened anyway). */
function bytesOf(lines: readonly string[]): Buffer {
  return lines.length === 0 ? NONE : Buffer.from(lines.join(''));
}

export interface ChunkScoring {
  run: BatchRun;
  model: CatalogModel;
  scorer: Scorer;
  chunkTimeoutMs: number;
  /** an `above-threshold` review: rows at or above the threshold go to the held file */
  splitRows: boolean;
  shadowVersions: readonly string[];
}

/** Chunks scored one after another, as one: their lines in order, their counts summed (one commit makes them durable). */
export function mergeChunks(chunks: readonly ScoredChunk[]): ScoredChunk {
  if (chunks.length === 1) return chunks[0] as ScoredChunk;
  const shadows = new Map<string, Buffer[]>();
  for (const c of chunks) {
    for (const [v, bytes] of c.shadows) {
      const parts = shadows.get(v);
      if (parts) parts.push(bytes);
      else shadows.set(v, [bytes]);
    }
  }
  const sum = (pick: (c: ScoredChunk) => number) => chunks.reduce((a, c) => a + pick(c), 0);
  const concat = (pick: (c: ScoredChunk) => Buffer) => Buffer.concat(chunks.map(pick));
  return {
    chunks: sum((c) => c.chunks),
    rows: sum((c) => c.rows),
    scored: sum((c) => c.scored),
    insufficient: sum((c) => c.insufficient),
    above: sum((c) => c.above),
    output: concat((c) => c.output),
    errors: concat((c) => c.errors),
    held: concat((c) => c.held),
    shadows: [...shadows].map(([v, parts]) => [v, Buffer.concat(parts)]),
  };
}

/** One error-file line: a FHIR OperationOutcome naming the row and what is wrong with it (never its values). */
function outcome(id: string, diagnostics: string, expression?: string[], code = 'invalid'): string {
  return `${JSON.stringify({
    resourceType: 'OperationOutcome',
    issue: [
      {
        severity: 'error',
        code,
        diagnostics: `row ${id}: ${diagnostics}`,
        ...(expression ? { expression } : {}),
      },
    ],
  })}\n`;
}

const ID_OPEN = Buffer.from('{"id":');
const PREDICTION = Buffer.from('"prediction":');
const SHADOW_PREDICTION = Buffer.from('"shadow":true,"prediction":');
const SILENT_END = Buffer.from('"silent":true}\n');
const LINE_END = Buffer.from('}\n');

/**
 * Writes an output line's head, `{"id":…,"model":…,"version":…,`: the bytes JSON.stringify writes for
 * `{ id, model, version, … }`, with the model and version encoded once per chunk instead of once per row.
 */
function lineHead(model: string, version: string): (out: ByteLines, id: string) => void {
  const tail = Buffer.from(`,"model":${JSON.stringify(model)},"version":${JSON.stringify(version)},`);
  return (out, id) => {
    out.raw(ID_OPEN);
    out.jsonString(id);
    out.raw(tail);
  };
}

/** A row of a chunk: read (CSV, FHIR), or an NDJSON line the chunk reads itself. */
export type ChunkRow = InputRow | NdjsonLine;

function isLine(row: ChunkRow): row is NdjsonLine {
  return (row as NdjsonLine).text !== undefined;
}

/**
 * An NDJSON line parsed and encoded into `out` at `offset` in place: its id read where it is, its values not copied
 * into an object without it, no row object. Returns the row's id, or undefined when the line is not a valid row:
 * the caller then reads it as any row is read (ndjsonRow, encodeRow), to report what is wrong (a bad row is never
 * lost). A valid line gives the id, values and assumed count ndjsonRow and encodeRow would give.
 */
export function encodeLine(
  features: readonly Feature[],
  item: NdjsonLine,
  out: Float32Array,
  offset: number,
  assumed: AssumedCount,
): string | undefined {
  if (item.text.length > MAX_LINE) return undefined;
  let obj: unknown;
  try {
    obj = JSON.parse(item.text);
  } catch {
    return undefined;
  }
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) return undefined;
  if (encodeRow(features, obj, out, offset, '', assumed, 'id')) return undefined;
  return rowId((obj as Record<string, unknown>).id, `line-${item.line}`);
}

/** Validates, encodes and scores a chunk's rows (one ONNX run), and shapes every line its files get. */
export async function scoreChunk(s: ChunkScoring, chunk: readonly ChunkRow[]): Promise<ScoredChunk> {
  const { run, model, scorer } = s;
  const { manifest } = model;
  const width = manifest.features.length;
  const input = new Float32Array(chunk.length * width);
  const valid: string[] = [];
  const validRows: InputRow[] = [];
  const assumed = { rows: 0 };
  const out: ScoredChunk = {
    chunks: 1,
    rows: chunk.length,
    scored: 0,
    insufficient: 0,
    above: 0,
    output: NONE,
    errors: NONE,
    held: NONE,
    shadows: [],
  };
  const errorLines: string[] = [];
  const fhir = run.input.format === 'fhir-ndjson';
  for (const item of chunk) {
    let row: InputRow;
    if (isLine(item)) {
      const id = encodeLine(manifest.features, item, input, valid.length * width, assumed);
      if (id !== undefined) {
        valid.push(id);
        continue;
      }
      row = ndjsonRow(item.text, item.line);
    } else row = item;
    if (row.error) {
      // a patient without the data to score is `incomplete`, counted apart from rows that are wrong
      errorLines.push(outcome(row.id, row.error, undefined, row.insufficient ? 'incomplete' : 'invalid'));
      if (row.insufficient) out.insufficient++;
      continue;
    }
    const problems = encodeRow(manifest.features, row.values, input, valid.length * width, '', assumed);
    if (!problems) {
      valid.push(row.id);
      // the RiskAssessment a FHIR run writes names the row's basis
      if (fhir) validRows.push(row);
    } else {
      const fields = problems.map((e) => e.pointer.split('/').pop() ?? '');
      errorLines.push(outcome(row.id, problems.map((e) => `${e.pointer || '/'}: ${e.detail}`).join('; '), fields));
    }
  }
  out.errors = bytesOf(errorLines);
  out.scored = valid.length;
  if (valid.length === 0) return out;
  const rows = {
    data: input.subarray(0, valid.length * width),
    rows: valid.length,
    assumedRows: assumed.rows,
    // no owners per row: a batch row's outcome is reported by the run's readers, checked against the run's record
    // (OutcomeService), so a chunk of thousands of rows does not log the same owners thousands of times
    refs: valid.map((id) => batchRef(run.id, id)),
  };
  const { predictions, silent } = await scorer.score({
    model,
    input: rows,
    tier: 'batch',
    version: run.version,
    deadlineMs: s.chunkTimeoutMs,
    mirror: false,
  });
  const head = lineHead(manifest.name, run.version);
  const json = predictionWriter(manifest.output);
  // the lines as bytes, written in place (a held file gets few rows, if any: it starts small)
  const outputLines = new ByteLines(Math.max(1024, valid.length * 384));
  const heldLines = new ByteLines(s.splitRows ? 1024 : 0);
  for (let i = 0; i < valid.length; i++) {
    const id = valid[i] as string;
    // silent deployment: the row was scored and recorded, its score is not shown (a FHIR run writes no
    // RiskAssessment for it: there is no prediction to state)
    if (silent) {
      if (!fhir) {
        head(outputLines, id);
        outputLines.raw(SILENT_END);
      }
      continue;
    }
    const prediction = predictions[i] as Record<string, unknown>;
    const above = prediction.aboveThreshold === true;
    if (above) out.above++;
    const target = above && s.splitRows ? heldLines : outputLines;
    if (fhir) {
      const resource = riskAssessment({
        runId: run.id,
        manifest,
        version: run.version,
        asOf: run.asOf,
        row: validRows[i] as InputRow,
        prediction,
      });
      target.text(`${JSON.stringify(resource)}\n`);
    } else {
      head(target, id);
      target.raw(PREDICTION);
      json(target, prediction);
      target.raw(LINE_END);
    }
  }
  out.output = outputLines.length === 0 ? NONE : outputLines.bytes();
  out.held = heldLines.length === 0 ? NONE : heldLines.bytes();
  // a failing shadow fails nothing: its chunk is recorded as an error line in its own file
  for (const shadow of await scorer.shadowScores(model, s.shadowVersions, rows, s.chunkTimeoutMs)) {
    const lines = new ByteLines(shadow.predictions ? valid.length * 384 : 256);
    if (shadow.predictions) {
      const shadowHead = lineHead(manifest.name, shadow.version);
      for (let i = 0; i < valid.length; i++) {
        shadowHead(lines, valid[i] as string);
        lines.raw(SHADOW_PREDICTION);
        json(lines, shadow.predictions[i] as Prediction);
        lines.raw(LINE_END);
      }
    } else {
      lines.text(`${JSON.stringify({ error: `shadow failed on ${valid.length} rows: ${shadow.error}` })}\n`);
    }
    out.shadows.push([shadow.version, lines.bytes()]);
  }
  return out;
}
