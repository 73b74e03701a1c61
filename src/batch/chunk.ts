import { riskAssessment } from '../fhir/risk-assessment.ts';
import type { CatalogModel } from '../serving/catalog.ts';
import { encodeRow } from '../serving/features.ts';
import type { Scorer } from '../serving/scorer.ts';
import type { InputRow } from './readers.ts';
import type { BatchRun } from './runs.ts';

/** Rows per chunk (one ONNX run, one commit) when the manifest's `batch.chunkSize` does not say. */
export const DEFAULT_CHUNK_SIZE = 1024;

/** What scoring one chunk makes: the lines each file gets and the counts its checkpoint moves by. */
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
  outputText: string;
  errorText: string;
  heldText: string;
  /** per shadow version, its lines */
  shadowTexts: Array<[string, string]>;
}

export interface ChunkScoring {
  run: BatchRun;
  model: CatalogModel;
  scorer: Scorer;
  chunkTimeoutMs: number;
  /** an `above-threshold` review: rows at or above the threshold go to the held text */
  splitRows: boolean;
  shadowVersions: readonly string[];
}

/** Chunks scored one after another, as one: their lines in order, their counts summed (one commit makes them durable). */
export function mergeChunks(chunks: readonly ScoredChunk[]): ScoredChunk {
  if (chunks.length === 1) return chunks[0] as ScoredChunk;
  const shadows = new Map<string, string>();
  for (const c of chunks) for (const [v, text] of c.shadowTexts) shadows.set(v, (shadows.get(v) ?? '') + text);
  const sum = (pick: (c: ScoredChunk) => number) => chunks.reduce((a, c) => a + pick(c), 0);
  return {
    chunks: sum((c) => c.chunks),
    rows: sum((c) => c.rows),
    scored: sum((c) => c.scored),
    insufficient: sum((c) => c.insufficient),
    above: sum((c) => c.above),
    outputText: chunks.map((c) => c.outputText).join(''),
    errorText: chunks.map((c) => c.errorText).join(''),
    heldText: chunks.map((c) => c.heldText).join(''),
    shadowTexts: [...shadows],
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

/** Validates, encodes and scores a chunk's rows (one ONNX run), and shapes every line its files get. */
export async function scoreChunk(s: ChunkScoring, chunk: readonly InputRow[]): Promise<ScoredChunk> {
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
    outputText: '',
    errorText: '',
    heldText: '',
    shadowTexts: [],
  };
  for (const row of chunk) {
    if (row.error) {
      // a patient without the data to score is `incomplete`, counted apart from rows that are wrong
      out.errorText += outcome(row.id, row.error, undefined, row.insufficient ? 'incomplete' : 'invalid');
      if (row.insufficient) out.insufficient++;
      continue;
    }
    const problems = encodeRow(manifest.features, row.values, input, valid.length * width, '', assumed);
    if (!problems) {
      valid.push(row.id);
      validRows.push(row);
    } else {
      const fields = problems.map((e) => e.pointer.split('/').pop() ?? '');
      out.errorText += outcome(row.id, problems.map((e) => `${e.pointer || '/'}: ${e.detail}`).join('; '), fields);
    }
  }
  out.scored = valid.length;
  if (valid.length === 0) return out;
  const rows = {
    data: input.subarray(0, valid.length * width),
    rows: valid.length,
    assumedRows: assumed.rows,
    refs: valid.map((id) => `batch:${run.id}:${id}`),
  };
  const { predictions, silent } = await scorer.score({
    model,
    input: rows,
    tier: 'batch',
    version: run.version,
    deadlineMs: s.chunkTimeoutMs,
    mirror: false,
  });
  const fhir = run.input.format === 'fhir-ndjson';
  const head = lineHead(manifest.name, run.version);
  let outputText = '';
  let heldText = '';
  for (let i = 0; i < valid.length; i++) {
    const id = valid[i] as string;
    // silent deployment: the row was scored and recorded, its score is not shown (a FHIR run writes no
    // RiskAssessment for it: there is no prediction to state)
    if (silent) {
      if (!fhir) outputText += `${head(id)}"silent":true}\n`;
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
      : `${head(id)}"prediction":${JSON.stringify(prediction)}}\n`;
    if (above && s.splitRows) heldText += line;
    else outputText += line;
  }
  out.outputText = outputText;
  out.heldText = heldText;
  // a failing shadow fails nothing: its chunk is recorded as an error line in its own file
  for (const shadow of await scorer.shadowScores(model, s.shadowVersions, rows, s.chunkTimeoutMs)) {
    let text = '';
    if (shadow.predictions) {
      const shadowHead = lineHead(manifest.name, shadow.version);
      valid.forEach((id, i) => {
        text += `${shadowHead(id)}"shadow":true,"prediction":${JSON.stringify(shadow.predictions[i])}}\n`;
      });
    } else {
      text = `${JSON.stringify({ error: `shadow failed on ${valid.length} rows: ${shadow.error}` })}\n`;
    }
    out.shadowTexts.push([shadow.version, text]);
  }
  return out;
}
