/** A worker thread for test/batch-priority.test.ts: lowers its own priority as a batch thread does, then waits. */
import { parentPort, workerData } from 'node:worker_threads';
import { lowerThreadPriority } from '../../src/platform/priority.ts';

const applied = lowerThreadPriority(workerData.nice as number);
parentPort?.postMessage({ applied });
// stays alive until the test terminates it, so its task can be read in /proc
setInterval(() => {}, 1000);
