/**
 * `with-cpu-hog <command…>`: runs a command beside a CPU hog, one worker thread per core spinning until the command
 * ends, then stops the hog and exits with the command's status. `npm run test:busy` runs the suite through it, to
 * show that no test depends on the machine's speed. `TRIAGE_HOG_THREADS` sets the number of threads (default: one
 * per core).
 */
import { spawn } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';

/** Spins until told to stop: a tight loop that checks a shared flag now and then. */
const SPIN = `
const { workerData } = require('node:worker_threads');
const stop = new Int32Array(workerData);
let x = 0;
while (Atomics.load(stop, 0) === 0) {
  for (let i = 0; i < 1e6; i++) x = (x * 31 + i) | 0;
}
`;

const [command, ...args] = process.argv.slice(2);
if (!command) {
  console.error('usage: with-cpu-hog <command> [args…]');
  process.exit(2);
}
const threads = Number(process.env.TRIAGE_HOG_THREADS || availableParallelism());
if (!Number.isInteger(threads) || threads < 1) {
  console.error(`TRIAGE_HOG_THREADS must be a positive integer, got "${process.env.TRIAGE_HOG_THREADS}"`);
  process.exit(2);
}
const flag = new SharedArrayBuffer(4);
const hogs = Array.from({ length: threads }, () => new Worker(SPIN, { eval: true, workerData: flag }));
console.error(`with-cpu-hog: ${threads} spinning thread(s) beside: ${[command, ...args].join(' ')}`);

async function stopHogs(): Promise<void> {
  Atomics.store(new Int32Array(flag), 0, 1);
  await Promise.all(hogs.map((w) => new Promise((resolve) => w.once('exit', resolve))));
}

const started = performance.now();
// its own process group, so a signal reaches the whole tree (npm does not always pass one on)
const child = spawn(command, args, { stdio: 'inherit', detached: true });
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    try {
      process.kill(-(child.pid as number), signal);
    } catch {
      child.kill(signal);
    }
  });
}
child.on('exit', async (code, signal) => {
  await stopHogs();
  console.error(`with-cpu-hog: the command ended after ${((performance.now() - started) / 1000).toFixed(1)} s`);
  process.exit(code ?? (signal ? 1 : 0));
});
