import { Readable } from 'node:stream';
import { readStagedExport } from '../ingress/staged-export.ts';
import type { CatalogModel } from '../serving/catalog.ts';
import type { Scorer } from '../serving/scorer.ts';
import { type ChunkRow, DEFAULT_CHUNK_SIZE, mergeChunks, type ScoredChunk, scoreChunk } from './chunk.ts';
import { type InputRow, readCsv, readFhirInput, readNdjsonLines } from './readers.ts';
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

/**
 * The run's input rows, a piece at a time (NDJSON by the piece of the file read, as lines the chunk reads itself; the
 * other formats row by row).
 */
function rowsOf(ctx: ExecuteContext, stream: Readable): AsyncGenerator<ChunkRow[]> {
  const { run, model } = ctx;
  if (ctx.exportFiles) {
    const window = { asOf: run.asOf, lookbackHours: model.manifest.batch?.lookbackHours ?? 72 };
    return oneByOne(readStagedExport(ctx.storage, ctx.exportFiles, model.manifest.features, window));
  }
  switch (run.input.format) {
    case 'ndjson':
      return readNdjsonLines(stream);
    case 'csv':
      return oneByOne(readCsv(stream, model.manifest.features));
    case 'fhir-ndjson':
      return oneByOne(
        readFhirInput(ctx.storage, run.input.path, stream, model.manifest.features, {
          asOf: run.asOf,
          lookbackHours: model.manifest.batch?.lookbackHours ?? 72,
        }),
      );
  }
}

async function* oneByOne(rows: AsyncIterable<InputRow>): AsyncGenerator<InputRow[]> {
  for await (const row of rows) yield [row];
}

type AppendHandle = Awaited<ReturnType<BatchStorage['openAppend']>>;

/** Scored chunks that wait, at most, for the commit under way: the next commit takes them all. */
const MAX_WAITING_CHUNKS = 16;

/**
 * Scores a run in chunks, one ONNX run per chunk, and commits each chunk: output and error lines appended and made
 * durable, then the checkpoint (rows consumed, bytes written) saved in one write. A run resumed after a crash cuts
 * its files back to the last checkpoint and skips the rows already consumed, so every input row is in the output
 * (or the error file) exactly once. A bad row never fails the run.
 *
 * A commit is waiting (fsync, Redis), scoring is work: chunks go on scoring while the last commit is under way, and
 * the next commit takes every chunk scored meanwhile (one fsync a file, one checkpoint: a busy disk's fsync takes
 * tens of ms). Commits stay one at a time and in order, so the checkpoint never names bytes that are not durable, and
 * it still moves by whole chunks.
 */
export async function executeRun(ctx: ExecuteContext): Promise<'completed' | 'cancelled'> {
  const { run, model, storage, runs } = ctx;
  const chunkSize = model.manifest.batch?.chunkSize ?? DEFAULT_CHUNK_SIZE;
  const output = await storage.openAppend(outputKey(run, 'output.ndjson'), run.outputBytes);
  const errors = await storage.openAppend(outputKey(run, 'errors.ndjson'), run.errorBytes);
  // an `above-threshold` review: rows at or above the threshold go to a file of their own, held until approved
  const splitRows = run.review === 'above-threshold';
  const held = splitRows ? await storage.openAppend(outputKey(run, HELD_FILE), run.heldBytes) : undefined;
  const shadowBytes: Record<string, number> = { ...run.shadowBytes };
  // shadow versions score the same rows, written beside the primary's output, never instead of it
  const shadowVersions = (model.routing.shadow?.versions ?? []).filter((v) => v !== run.version);
  const shadowFiles = new Map<string, AppendHandle>(
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
  const scoring = {
    run,
    model,
    scorer: ctx.scorer,
    chunkTimeoutMs: ctx.chunkTimeoutMs,
    splitRows,
    shadowVersions,
  };

  /** Makes a scored chunk durable, then its checkpoint; resolves with whether the run was cancelled meanwhile. */
  const commit = async (chunk: ScoredChunk): Promise<boolean> => {
    // different files: made durable side by side, all of them before the checkpoint names their lengths
    const writes: Array<Promise<unknown>> = [];
    const append = (file: AppendHandle, bytes: Buffer, done: (length: number) => void) => {
      if (bytes.length > 0) writes.push(file.append(bytes).then(done));
    };
    append(output, chunk.output, (n) => {
      checkpoint.outputBytes = n;
    });
    append(errors, chunk.errors, (n) => {
      checkpoint.errorBytes = n;
    });
    if (held) {
      append(held, chunk.held, (n) => {
        checkpoint.heldBytes = n;
      });
    }
    for (const [version, bytes] of chunk.shadows) {
      append(shadowFiles.get(version) as AppendHandle, bytes, (n) => {
        shadowBytes[version] = n;
      });
    }
    await Promise.all(writes);
    checkpoint.rowsDone += chunk.rows;
    checkpoint.scored += chunk.scored;
    checkpoint.failed += chunk.rows - chunk.scored - chunk.insufficient;
    checkpoint.insufficient += chunk.insufficient;
    checkpoint.above += chunk.above;
    checkpoint.chunks += chunk.chunks;
    // the checkpoint and the cancellation check go out together: one round trip per chunk
    const [, state] = await Promise.all([
      runs.update(run.id, { ...checkpoint, shadowBytes: JSON.stringify(shadowBytes), updatedAt: Date.now() }),
      runs.state(run.id),
    ]);
    ctx.onChunk?.(chunk.scored, chunk.rows - chunk.scored);
    return state === 'cancelled';
  };

  let committing: Promise<boolean> | undefined;
  let commitDone = true;
  /** Waits for the commit under way (its failure fails the run); true when the run was cancelled. */
  const committed = async (): Promise<boolean> => {
    const pending = committing;
    committing = undefined;
    return (await pending) ?? false;
  };
  const startCommit = (chunk: ScoredChunk) => {
    commitDone = false;
    committing = commit(chunk);
    const done = () => {
      commitDone = true;
    };
    // awaited at a later chunk or below; until then a failure must not count as unhandled
    committing.then(done, done);
  };
  /** scored, waiting for the commit under way */
  const waiting: ScoredChunk[] = [];
  try {
    const stream = ctx.exportFiles ? Readable.from([]) : await storage.openRead(run.input.path);
    let index = 0;
    let chunk: ChunkRow[] = [];
    for await (const rows of rowsOf(ctx, stream)) {
      for (const row of rows) {
        if (index++ < run.rowsDone) continue; // committed before a restart
        chunk.push(row);
        if (chunk.length < chunkSize) continue;
        await ctx.beforeChunk?.();
        waiting.push(await scoreChunk(scoring, chunk));
        chunk = [];
        if (!commitDone && waiting.length < MAX_WAITING_CHUNKS) continue;
        if (await committed()) {
          // cancelled while these chunks scored: what was scored (and monitored) is written, and the run stops here
          await commit(mergeChunks(waiting));
          stream.destroy();
          return 'cancelled';
        }
        startCommit(mergeChunks(waiting.splice(0)));
      }
    }
    if (chunk.length > 0) waiting.push(await scoreChunk(scoring, chunk));
    const cancelled = await committed();
    if (waiting.length > 0) await commit(mergeChunks(waiting));
    return cancelled ? 'cancelled' : 'completed';
  } finally {
    // a run that stops on an error (a suspension, a failed chunk) lets the commit under way finish first
    await committing?.catch(() => undefined);
    await output.close();
    await errors.close();
    await held?.close();
    await Promise.all([...shadowFiles.values()].map((f) => f.close()));
  }
}
