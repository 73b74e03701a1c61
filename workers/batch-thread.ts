/**
 * A batch thread, kept warm between runs (workers/batch-thread-run.ts starts it with the batch worker and sends it
 * one run at a time; workers/batch-thread-main.ts scores them). Its modules (onnxruntime's native addon among them),
 * its Redis connection, its runtime factory and the sessions of the versions it scored stay loaded, so a run starts in
 * milliseconds instead of the half second a fresh thread took.
 *
 * This module lowers the thread's priority and only then loads the rest: the thread is started while the gateway
 * starts (and a replaced one while it serves), and loading its modules is half a second of CPU that bedside work
 * should get first.
 */

import { parentPort, workerData } from 'node:worker_threads';
import { lowerThreadPriority } from '../src/platform/priority.ts';
import type { LoadedModel } from '../src/registry/load.ts';
import type { RoutingState } from '../src/serving/routing.ts';

/** What a thread is started with: the same for every run it scores (the process's settings). */
export interface BatchThreadConfig {
  module: string;
  redisUrl: string;
  prefix: string;
  dataDir: string;
  /** TRIAGE_OBJECT_STORES: inputs named `s3://…` or `gs://…` are read from their bucket */
  objectStores?: string;
  onnxThreads: number;
  /** this thread's nice value: its scoring (and the ONNX threads it makes) yields the cores to bedside work */
  nice: number;
  /** the parent's event-loop pressure (see src/platform/pressure.ts): chunks wait while its loop is busier than this */
  pressure?: { buffer: SharedArrayBuffer; maxUtilization: number };
  /** record monitoring aggregates (written to the shared Redis buckets like every replica's) */
  monitoring: boolean;
  /** how often, ms, the thread says it is alive while it scores a run (the parent's watchdog listens) */
  aliveEveryMs: number;
}

/** One run, sent to the thread as a message. */
export interface BatchRunRequest {
  type: 'run';
  runId: string;
  model: LoadedModel;
  /** the routing in force when the run started: its shadows score beside it */
  routing: RoutingState;
  chunkTimeoutMs: number;
  /** a FHIR export's staged files (src/ingress/), read instead of the run's input path */
  exportFiles?: string[];
}

/** What the parent sends: a run; `stop` (after the run under way, if any); `crash`, `hang` (tests: faults injected). */
export type BatchThreadRequest = BatchRunRequest | { type: 'stop' } | { type: 'crash' } | { type: 'hang'; ms: number };

export type BatchThreadMessage =
  | { type: 'chunk'; scored: number; failed: number; pausedMs: number; scoringMs: number }
  | { type: 'done'; outcome: 'completed' | 'cancelled' | 'suspended' }
  | { type: 'error'; message: string; permanent?: boolean }
  | { type: 'alive' }
  /** loaded: listening for runs */
  | { type: 'ready' };

if (!parentPort) throw new Error('batch-thread must run in a worker thread');
// before anything else loads, and before the runtimes exist, so the intra-op threads ONNX makes inherit it
// (session.run itself runs on this thread)
lowerThreadPriority((workerData as BatchThreadConfig).nice);
await import('./batch-thread-main.ts');
