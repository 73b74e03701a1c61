/** The batch worker's side of its warm batch threads (workers/batch-thread.ts): one run at a time per thread. */
import { Worker as ThreadWorker } from 'node:worker_threads';
import { UnrecoverableError } from 'bullmq';
import type { Logger } from 'pino';
import type { BatchRunRequest, BatchThreadConfig, BatchThreadMessage, BatchThreadRequest } from './batch-thread.ts';

// Run from the sources (tests, tsx), a worker thread on Node 20 does not inherit tsx's loader: it starts at an entry
// that registers tsx. The compiled build (dist/, what production runs) has no tsx: the thread runs its JavaScript.
const FROM_SOURCES = import.meta.url.endsWith('.ts');
const THREAD_MODULE = new URL(FROM_SOURCES ? './batch-thread.ts' : './batch-thread.js', import.meta.url).href;
const THREAD_ENTRY = FROM_SOURCES ? new URL('./batch-thread-entry.mjs', import.meta.url) : new URL(THREAD_MODULE);

export type BatchOutcome = 'completed' | 'cancelled' | 'suspended';
export type RunRequest = Omit<BatchRunRequest, 'type'>;
export type ChunkReport = Extract<BatchThreadMessage, { type: 'chunk' }>;

export interface BatchThreadsOptions {
  /** the settings every thread starts with */
  config: Omit<BatchThreadConfig, 'module' | 'aliveEveryMs'>;
  /**
   * A thread that says nothing for this long while it scores (no chunk, no heartbeat) is stuck: it is let go (told to
   * stop, never used again) and the run's attempt fails, to be tried again on another. A chunk may take up to the
   * run's chunk timeout, during which an in-process session can hold the thread's event loop: past twice that, it is
   * not coming back.
   */
  hangAfterMs: number;
  logger: Logger;
}

/**
 * How long a thread may take to load before a run waiting for it gives up on it (its modules and connection: well
 * under a second on an idle machine, seconds on a contended one at the batch nice value).
 */
const LOAD_BOUND_MS = 60_000;

/**
 * An idle thread that dies (a bug, an addon's abort caught as an exit) is replaced at once, so the next run still
 * starts warm; a thread that keeps dying is replaced at most this often, so a fault that kills every new thread
 * costs a load and a log line every so often, not a core.
 */
export const IDLE_REPLACE_EVERY_MS = 10_000;

interface Thread {
  worker: ThreadWorker;
  exited: boolean;
  /** loaded: the run watchdog counts its silence from here */
  ready: boolean;
  /** set while it scores a run: where its exit goes */
  onExit?: (code: number) => void;
}

/**
 * Batch threads kept warm between runs. Starting a thread per run cost every run half a second or more before its
 * first row (the thread's modules, onnxruntime's addon among them, a Redis connection, the runtime factory, the ONNX
 * session), most of a short run's time. Here a thread is started with the batch worker and scores one run after
 * another, keeping its connection and sessions (workers/batch-thread.ts keys them on the versions' runtimes and
 * artifacts, so a new artifact is never scored with an old session).
 *
 * A thread that crashes, or fails a run for a reason that may be its own (anything but the input's fault), fails that
 * run's attempt only (BullMQ tries it again from its checkpoint) and is not used again: the next run gets a new one.
 * An idle thread that dies is replaced at once (a thread that keeps dying, at most every IDLE_REPLACE_EVERY_MS), so
 * the next run does not pay for a cold one. Idle threads never keep the process alive, and `close` stops them all. Threads are only ever asked to stop, never
 * terminated (#retire says why).
 */
export class BatchThreads {
  readonly #options: BatchThreadsOptions;
  #idle: Thread[] = [];
  readonly #busy = new Set<Thread>();
  #closed = false;
  #started = 0;
  /** the most runs scored here at once: as many threads are kept warm between runs, no more */
  #peakBusy = 1;
  /** when an idle thread that died was last replaced, and the replacement waiting for its turn, if any */
  #replacedAt = Number.NEGATIVE_INFINITY;
  #replacing: NodeJS.Timeout | undefined;

  constructor(options: BatchThreadsOptions) {
    this.#options = options;
  }

  /** how many threads this process has started (a run that reused a warm one started none) */
  get started(): number {
    return this.#started;
  }

  /** the thread ids of the idle threads, next one to be used first */
  get idleThreadIds(): number[] {
    return this.#idle.map((t) => t.worker.threadId).reverse();
  }

  /** the thread ids of the threads scoring a run now */
  get busyThreadIds(): number[] {
    return [...this.#busy].map((t) => t.worker.threadId);
  }

  /** Starts a thread to wait for the first run, so that run starts warm too (a scheduled run at night included). */
  warm(): void {
    if (this.#closed || this.#idle.length > 0) return;
    this.#idle.push(this.#start());
  }

  #start(): Thread {
    const { config, hangAfterMs } = this.#options;
    const worker = new ThreadWorker(THREAD_ENTRY, {
      workerData: {
        ...config,
        module: THREAD_MODULE,
        aliveEveryMs: Math.max(10, Math.min(5000, Math.floor(hangAfterMs / 4))),
      } satisfies BatchThreadConfig,
    });
    this.#started++;
    const thread: Thread = { worker, exited: false, ready: false };
    // idle, it waits for work that may never come: it must not keep the process alive (a run refs it)
    worker.unref();
    // an 'error' without a listener would throw on the main thread: the gateway must outlive its batch thread
    worker.on('error', (err: Error) => {
      this.#options.logger.warn({ err: { message: err.message } }, 'batch thread failed');
    });
    worker.on('message', (m: BatchThreadMessage) => {
      if (m.type === 'ready') thread.ready = true;
    });
    worker.on('exit', (code) => {
      thread.exited = true;
      // a thread let go (#retire) has left the idle list already: only one that died waiting is still on it
      const diedIdle = this.#idle.includes(thread);
      this.#idle = this.#idle.filter((t) => t !== thread);
      this.#busy.delete(thread);
      thread.onExit?.(code);
      if (diedIdle) this.#replaceIdle(worker.threadId, code);
    });
    return thread;
  }

  #replaceIdle(threadId: number, code: number): void {
    if (this.#closed || this.#replacing) return;
    const waitMs = Math.max(0, this.#replacedAt + IDLE_REPLACE_EVERY_MS - performance.now());
    this.#options.logger.warn(
      { threadId, code, replaceInMs: Math.round(waitMs) },
      'an idle batch thread exited: a new one is started for the next run',
    );
    this.#replacing = setTimeout(() => {
      this.#replacing = undefined;
      this.#replacedAt = performance.now();
      this.warm();
    }, waitMs);
    this.#replacing.unref();
  }

  /** Scores one run in a warm thread (a new one if none is idle); resolves with its outcome. */
  run(request: RunRequest, onChunk: (chunk: ChunkReport) => void): Promise<BatchOutcome> {
    if (this.#closed) return Promise.reject(new Error('batch threads closed'));
    const thread = this.#idle.pop() ?? this.#start();
    this.#busy.add(thread);
    this.#peakBusy = Math.max(this.#peakBusy, this.#busy.size);
    const { worker } = thread;
    worker.ref();
    return new Promise<BatchOutcome>((resolve, reject) => {
      let heardAt = performance.now();
      let failure: Error | undefined;
      const finish = (reusable: boolean) => {
        clearInterval(watchdog);
        worker.off('message', onMessage);
        worker.off('error', onError);
        thread.onExit = undefined;
        this.#busy.delete(thread);
        if (reusable && !this.#closed && this.#idle.length < this.#peakBusy) {
          worker.unref();
          this.#idle.push(thread);
        } else {
          this.#retire(thread);
        }
      };
      const onMessage = (m: BatchThreadMessage) => {
        heardAt = performance.now();
        if (m.type === 'chunk') onChunk(m);
        else if (m.type === 'done') {
          finish(true);
          resolve(m.outcome);
        } else if (m.type === 'error') {
          // the input's fault leaves the thread as good as it was; anything else (Redis, a runtime, a timed-out
          // chunk whose session may still be busy) might be the thread's: the next run gets a fresh one
          finish(m.permanent === true);
          reject(m.permanent ? new UnrecoverableError(m.message) : new Error(m.message));
        }
      };
      const onError = (err: Error) => {
        failure = err;
      };
      thread.onExit = (code) => {
        finish(false);
        reject(failure ?? new Error(`batch thread exited with code ${code}`));
      };
      const { hangAfterMs } = this.#options;
      const watchdog = setInterval(
        () => {
          // a thread still loading says nothing yet: it gets the load bound before it is given up on
          const limit = thread.ready ? hangAfterMs : Math.max(hangAfterMs, LOAD_BOUND_MS);
          if (performance.now() - heardAt < limit) return;
          this.#options.logger.warn(
            { runId: request.runId, hangAfterMs },
            'batch thread unresponsive: let go, the run is tried again on another',
          );
          failure = new Error(`batch thread unresponsive for ${Math.round(limit)} ms: let go`);
          finish(false);
          reject(failure);
        },
        Math.max(10, Math.min(5000, Math.floor(hangAfterMs / 4))),
      );
      watchdog.unref();
      worker.on('message', onMessage);
      worker.on('error', onError);
      worker.postMessage({ type: 'run', ...request } satisfies BatchRunRequest);
    });
  }

  /**
   * Lets a thread go: it is told to stop once it is done with what it is doing, and exits by itself; it no longer
   * keeps the process alive. Never terminated: a thread terminated inside a session run aborts the process (see
   * workers/batch-thread-main.ts). A thread stuck for good stays stuck, but no run waits for it.
   */
  #retire(thread: Thread): void {
    this.#idle = this.#idle.filter((t) => t !== thread);
    this.#busy.delete(thread);
    thread.worker.unref();
    if (!thread.exited) thread.worker.postMessage({ type: 'stop' } satisfies BatchThreadRequest);
  }

  /** Tests: the thread scoring a run throws an exception nothing catches (what a bug in its code does). */
  crashBusyThread(): number | undefined {
    const thread = [...this.#busy][0];
    thread?.worker.postMessage({ type: 'crash' } satisfies BatchThreadRequest);
    return thread?.worker.threadId;
  }

  /** Tests: the idle thread next in line throws an exception nothing catches, as a run's thread does in crashBusyThread. */
  crashIdleThread(): number | undefined {
    const thread = this.#idle.at(-1);
    thread?.worker.postMessage({ type: 'crash' } satisfies BatchThreadRequest);
    return thread?.worker.threadId;
  }

  /** Tests: the thread scoring a run holds its event loop for `ms` (what a stuck thread looks like). */
  hangBusyThread(ms: number): number | undefined {
    const thread = [...this.#busy][0];
    thread?.worker.postMessage({ type: 'hang', ms } satisfies BatchThreadRequest);
    return thread?.worker.threadId;
  }

  /**
   * Stops every thread (after the worker's close no run is scoring): each releases its sessions and connection and
   * exits; resolves once they have (or after `graceMs`: a thread that does not stop is left to the process's exit).
   */
  async close(graceMs = 5000): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#replacing);
    this.#replacing = undefined;
    const threads = [...this.#idle, ...this.#busy].filter((t) => !t.exited);
    const exited = threads.map((t) => new Promise<void>((resolve) => t.worker.once('exit', () => resolve())));
    for (const t of threads) this.#retire(t);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(exited),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, graceMs);
        timer.unref();
      }),
    ]);
    clearTimeout(timer);
  }
}
