import type { Readable } from 'node:stream';
import { type InputRow, readFhir } from '../batch/readers.ts';
import type { BatchStorage } from '../batch/storage.ts';
import type { Feature } from '../registry/schema.ts';

/**
 * A staged export read as one FHIR input: every Patient and Observation file of it, one row per patient (readFhir).
 * Files are streamed; only the per-patient aggregate is held.
 */
export async function* readStagedExport(
  storage: BatchStorage,
  keys: readonly string[],
  features: readonly Feature[],
  window: { asOf: number; lookbackHours: number },
): AsyncGenerator<InputRow> {
  const streams: Readable[] = [];
  try {
    for (const key of keys) streams.push(await storage.openRead(key));
    const files = keys.map((key, i) => ({ name: key.split('/').pop() as string, stream: streams[i] as Readable }));
    yield* readFhir(files, features, window);
  } finally {
    for (const s of streams) s.destroy();
  }
}
