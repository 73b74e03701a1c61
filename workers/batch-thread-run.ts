/** Starting a batch run's worker thread (workers/batch-thread.ts) and following it to its outcome. */
import { Worker as ThreadWorker } from 'node:worker_threads';
import { UnrecoverableError } from 'bullmq';
import type { BatchThreadInput, BatchThreadMessage } from './batch-thread.ts';

// Run from the sources (tests, tsx), a worker thread on Node 20 does not inherit tsx's loader: it starts at an entry
// that registers tsx. The compiled build (dist/, what production runs) has no tsx: the thread runs its JavaScript.
const FROM_SOURCES = import.meta.url.endsWith('.ts');
const THREAD_MODULE = new URL(FROM_SOURCES ? './batch-thread.ts' : './batch-thread.js', import.meta.url).href;
const THREAD_ENTRY = FROM_SOURCES ? new URL('./batch-thread-entry.mjs', import.meta.url) : new URL(THREAD_MODULE);

/** Runs one batch run in a worker thread; resolves with its outcome. */
export function runInThread(
  input: Omit<BatchThreadInput, 'module'>,
  onChunk: (chunk: Extract<BatchThreadMessage, { type: 'chunk' }>) => void,
) {
  return new Promise<'completed' | 'cancelled' | 'suspended'>((resolve, reject) => {
    const thread = new ThreadWorker(THREAD_ENTRY, { workerData: { ...input, module: THREAD_MODULE } });
    let settled = false;
    thread.on('message', (m: BatchThreadMessage) => {
      if (m.type === 'chunk') onChunk(m);
      else if (m.type === 'done') {
        settled = true;
        resolve(m.outcome);
      } else {
        settled = true;
        reject(m.permanent ? new UnrecoverableError(m.message) : new Error(m.message));
      }
    });
    thread.on('error', (err) => {
      settled = true;
      reject(err);
    });
    thread.on('exit', (code) => {
      if (!settled) reject(new Error(`batch thread exited with code ${code}`));
    });
  });
}
