import { riskAssessment } from '../fhir/risk-assessment.ts';
import { batchRef } from '../outcomes/prediction-log.ts';
import type { Feature } from '../registry/schema.ts';
import type { CatalogModel } from '../serving/catalog.ts';
import { type AssumedCount, encodeRow } from '../serving/features.ts';
import { type Prediction, predictionWriter } from '../serving/predictions.ts';
import type { Scorer } from '../serving/scorer.ts';
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

/**
 * The head of an output line, `{"id":…,"model":…,"version":…,`: the same bytes JSON.stringify writes for
 * `{ id, model, version, … }`, with the model and version serialised once per chunk instead of once per row.
 */
function lineHead(model: string, version: string): (id: string) => string {
  const tail = `,"model":${JSON.stringify(model)},"version":${JSON.stringify(version)},`;
  return (id) => `{"id":${JSON.stringify(id)}${tail}`;
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
  const outputLines: string[] = [];
  const heldLines: string[] = [];
  for (let i = 0; i < valid.length; i++) {
    const id = valid[i] as string;
    // silent deployment: the row was scored and recorded, its score is not shown (a FHIR run writes no
    // RiskAssessment for it: there is no prediction to state)
    if (silent) {
      if (!fhir) outputLines.push(`${head(id)}"silent":true}\n`);
      continue;
    }
    const prediction = predictions[i] as Record<string, unknown>;
    const above = prediction.aboveThreshold === true;
    if (above) out.above++;
    const line = fhir
      ? `${JSON.stringify(
          riskAssessment({
            runId: run.id,
            manifest,
            version: run.version,
            asOf: run.asOf,
            row: validRows[i] as InputRow,
            prediction,
          }),
        )}\n`
      : `${head(id)}"prediction":${json(prediction)}}\n`;
    if (above && s.splitRows) heldLines.push(line);
    else outputLines.push(line);
  }
  out.output = bytesOf(outputLines);
  out.held = bytesOf(heldLines);
  // a failing shadow fails nothing: its chunk is recorded as an error line in its own file
  for (const shadow of await scorer.shadowScores(model, s.shadowVersions, rows, s.chunkTimeoutMs)) {
    const lines: string[] = [];
    if (shadow.predictions) {
      const shadowHead = lineHead(manifest.name, shadow.version);
      valid.forEach((id, i) => {
        lines.push(`${shadowHead(id)}"shadow":true,"prediction":${json(shadow.predictions[i] as Prediction)}}\n`);
      });
    } else {
      lines.push(`${JSON.stringify({ error: `shadow failed on ${valid.length} rows: ${shadow.error}` })}\n`);
    }
    out.shadows.push([shadow.version, bytesOf(lines)]);
  }
  return out;
}
