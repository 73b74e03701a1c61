import { Readable } from 'node:stream';
import { riskAssessment } from '../fhir/risk-assessment.ts';
import { readStagedExport } from '../ingress/staged-export.ts';
import type { CatalogModel } from '../serving/catalog.ts';
import { encodeRow } from '../serving/features.ts';
import type { Scorer } from '../serving/scorer.ts';
import { type InputRow, readCsv, readFhirInput, readNdjson } from './readers.ts';
import { type BatchRun, HELD_FILE, outputKey, type RunStore, shadowOutputKey } from './runs.ts';
import type { BatchStorage } from './storage.ts';

export interface ExecuteContext {
  run: BatchRun;
  /** the model with the routing its run was started under */
  model: CatalogModel;
  scorer: Scorer;
  storage: BatchStorage;
  runs: RunStore;
  /** how long one chunk may take to score */
  chunkTimeoutMs: number;
  /** the staged files of a FHIR server's export, read instead of `run.input.path` */
  exportFiles?: string[];
  /** called after each committed chunk with the rows it scored and failed */
  onChunk?: (scored: number, failed: number) => void;
  /** awaited before each chunk: a run yields here while bedside traffic needs the machine */
  beforeChunk?: () => Promise<void>;
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

function rowsOf(ctx: ExecuteContext, stream: Parameters<typeof readNdjson>[0]): AsyncGenerator<InputRow> {
  const { run, model } = ctx;
  if (ctx.exportFiles) {
    const window = { asOf: run.asOf, lookbackHours: model.manifest.batch?.lookbackHours ?? 72 };
    return readStagedExport(ctx.storage, ctx.exportFiles, model.manifest.features, window);
  }
  switch (run.input.format) {
    case 'ndjson':
      return readNdjson(stream);
    case 'csv':
      return readCsv(stream, model.manifest.features);
    case 'fhir-ndjson':
      return readFhirInput(ctx.storage, run.input.path, stream, model.manifest.features, {
        asOf: run.asOf,
        lookbackHours: model.manifest.batch?.lookbackHours ?? 72,
      });
  }
}

/**
 * Scores a run in chunks, one ONNX run per chunk, and commits each chunk: output and error lines appended and made
 * durable, then the checkpoint (rows consumed, bytes written) saved in one write. A run resumed after a crash cuts
 * its files back to the last checkpoint and skips the rows already consumed, so every input row is in the output
 * (or the error file) exactly once. A bad row never fails the run.
 */
export async function executeRun(ctx: ExecuteContext): Promise<'completed' | 'cancelled'> {
  const { run, model, storage, runs, scorer } = ctx;
  const { manifest } = model;
  const width = manifest.features.length;
  const chunkSize = manifest.batch?.chunkSize ?? 1024;
  const output = await storage.openAppend(outputKey(run, 'output.ndjson'), run.outputBytes);
  const errors = await storage.openAppend(outputKey(run, 'errors.ndjson'), run.errorBytes);
  // an `above-threshold` review: rows at or above the threshold go to a file of their own, held until approved
  const splitRows = run.review === 'above-threshold';
  const held = splitRows ? await storage.openAppend(outputKey(run, HELD_FILE), run.heldBytes) : undefined;
  const shadowBytes: Record<string, number> = { ...run.shadowBytes };
  // shadow versions score the same rows, written beside the primary's output, never instead of it
  const shadowVersions = (model.routing.shadow?.versions ?? []).filter((v) => v !== run.version);
  const shadowFiles = new Map(
    await Promise.all(
      shadowVersions.map(
        async (v) => [v, await storage.openAppend(shadowOutputKey(run, v), shadowBytes[v] ?? 0)] as const,
      ),
    ),
  );
  const checkpoint = {
    rowsDone: run.rowsDone,
    scored: run.scored,
    failed: run.failed,
    insufficient: run.insufficient,
    outputBytes: run.outputBytes,
    errorBytes: run.errorBytes,
    chunks: run.chunks,
    above: run.above,
    heldBytes: run.heldBytes,
  };

  const commit = async (chunk: InputRow[]): Promise<void> => {
    const input = new Float32Array(chunk.length * width);
    const valid: string[] = [];
    const validRows: InputRow[] = [];
    const assumed = { rows: 0 };
    let errorText = '';
    let insufficient = 0;
    for (const row of chunk) {
      if (row.error) {
        // a patient without the data to score is `incomplete`, counted apart from rows that are wrong
        errorText += outcome(row.id, row.error, undefined, row.insufficient ? 'incomplete' : 'invalid');
        if (row.insufficient) insufficient++;
        continue;
      }
      const problems = encodeRow(manifest.features, row.values, input, valid.length * width, '', assumed);
      if (!problems) {
        valid.push(row.id);
        validRows.push(row);
      } else {
        const fields = problems.map((e) => e.pointer.split('/').pop() ?? '');
        errorText += outcome(row.id, problems.map((e) => `${e.pointer || '/'}: ${e.detail}`).join('; '), fields);
      }
    }
    let outputText = '';
    let heldText = '';
    if (valid.length > 0) {
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
        deadlineMs: ctx.chunkTimeoutMs,
        mirror: false,
      });
      valid.forEach((id, i) => {
        // silent deployment: the row was scored and recorded, its score is not shown (a FHIR run writes no
        // RiskAssessment for it: there is no prediction to state)
        if (silent) {
          if (run.input.format !== 'fhir-ndjson') {
            outputText += `${JSON.stringify({ id, model: manifest.name, version: run.version, silent: true })}\n`;
          }
          return;
        }
        const prediction = predictions[i] as Record<string, unknown>;
        const above = prediction.aboveThreshold === true;
        if (above) checkpoint.above++;
        const line =
          run.input.format === 'fhir-ndjson'
            ? riskAssessment({
                runId: run.id,
                manifest,
                version: run.version,
                asOf: run.asOf,
                row: validRows[i] as InputRow,
                prediction,
              })
            : { id, model: manifest.name, version: run.version, prediction };
        if (above && splitRows) heldText += `${JSON.stringify(line)}\n`;
        else outputText += `${JSON.stringify(line)}\n`;
      });
      // a failing shadow fails nothing: its chunk is recorded as an error line in its own file
      for (const shadow of await scorer.shadowScores(model, shadowVersions, rows, ctx.chunkTimeoutMs)) {
        let text = '';
        if (shadow.predictions) {
          valid.forEach((id, i) => {
            text += `${JSON.stringify({ id, model: manifest.name, version: shadow.version, shadow: true, prediction: shadow.predictions[i] })}\n`;
          });
        } else {
          text = `${JSON.stringify({ error: `shadow failed on ${valid.length} rows: ${shadow.error}` })}\n`;
        }
        shadowBytes[shadow.version] = await (
          shadowFiles.get(shadow.version) as Awaited<ReturnType<BatchStorage['openAppend']>>
        ).append(text);
      }
    }
    if (outputText) checkpoint.outputBytes = await output.append(outputText);
    if (errorText) checkpoint.errorBytes = await errors.append(errorText);
    if (heldText && held) checkpoint.heldBytes = await held.append(heldText);
    checkpoint.rowsDone += chunk.length;
    checkpoint.scored += valid.length;
    checkpoint.failed += chunk.length - valid.length - insufficient;
    checkpoint.insufficient += insufficient;
    checkpoint.chunks += 1;
    await runs.update(run.id, { ...checkpoint, shadowBytes: JSON.stringify(shadowBytes), updatedAt: Date.now() });
    ctx.onChunk?.(valid.length, chunk.length - valid.length);
  };

  try {
    const stream = ctx.exportFiles ? Readable.from([]) : await storage.openRead(run.input.path);
    let index = 0;
    let chunk: InputRow[] = [];
    for await (const row of rowsOf(ctx, stream)) {
      if (index++ < run.rowsDone) continue; // committed before a restart
      chunk.push(row);
      if (chunk.length >= chunkSize) {
        await ctx.beforeChunk?.();
        await commit(chunk);
        chunk = [];
        if ((await runs.state(run.id)) === 'cancelled') {
          stream.destroy();
          return 'cancelled';
        }
      }
    }
    if (chunk.length > 0) await commit(chunk);
    return 'completed';
  } finally {
    await output.close();
    await errors.close();
    await held?.close();
    await Promise.all([...shadowFiles.values()].map((f) => f.close()));
  }
}
