import { deadlines } from '../platform/deadlines.ts';
import type { OutputTensor } from '../runtime/types.ts';
import { asProblem, deadlineProblem } from './refusals.ts';
import type { Runner } from './runners.ts';

/** Rows encoded as the model's input tensor. */
export interface EncodedInput {
  data: Float32Array;
  rows: number;
  /** rows with a missing value for which the manifest's default was assumed (undefined: not known) */
  assumedRows?: number;
  /**
   * per row, what an outcome names it by (`request:<id>#<i>`, `job:<id>#<i>`, `batch:<run>:<row>`, `hl7:…`); a row
   * a caller can name two ways (an HL7 message over HTTP: its request id and its message control id) has a list, the
   * first its own reference and the others aliases an outcome may name it by just as well
   */
  refs?: readonly (string | readonly string[])[];
  /**
   * the clients whose predictions these rows are (the caller of a request): of the clients, only they may report the
   * rows' outcomes. Absent: rows whose reference names a record that says whose they are (a job's, a batch run's:
   * checked against it by OutcomeService), or a door with no calling client (MLLP, CDS Hooks), whose rows any client
   * allowed the model may name.
   */
  owners?: readonly string[];
}

/**
 * Runs one version within the deadline: past it the caller gets a deadline Problem at once, never a late score, and
 * work not yet started is withdrawn. `onIdle` fires when the runtime is done with the work (or it was withdrawn):
 * a deadline answered early does not free capacity the runtime is still using.
 */
export function run(
  runner: Runner,
  input: EncodedInput,
  deadlineAt: number,
  deadlineMs: number,
  onIdle: (() => void) | undefined,
  /** the deadline the refusal names, when the caller's budget was partly spent before this run (default deadlineMs) */
  options: { reportedMs?: number } = {},
): Promise<Record<string, OutputTensor>> {
  const reportedMs = options.reportedMs ?? deadlineMs;
  const submission = runner.submit(input.data, input.rows, deadlineAt);
  if (onIdle) submission.result.then(onIdle, onIdle);
  // one promise per call (no race of three promises), and its deadline in the process's heap rather than a timer of
  // its own: this is the bedside hot path, and a deadline there fires on time even in a long turn of a busy loop
  return new Promise((resolve, reject) => {
    const deadline = deadlines.add(deadlineMs, () => {
      submission.cancel();
      reject(deadlineProblem(reportedMs));
    });
    submission.result.then(
      (outputs) => {
        deadline.cancel();
        resolve(outputs);
      },
      (err: unknown) => {
        deadline.cancel();
        reject(asProblem(err));
      },
    );
  });
}

/**
 * The part of a request's deadline kept back from a remote version for its in-process fallback, so a slow endpoint
 * (whose timeout defaults to the whole budget, or a caller's shorter deadline) still leaves the fallback time to
 * answer: a fifth of the deadline, at least 10 ms and twice the fallback's warm-up p99, at most half the deadline.
 */
export function fallbackReserveMs(fallback: Runner, deadlineMs: number): number {
  const wanted = Math.max(10, Math.ceil(2 * (fallback.warmupP99Ms ?? 0)), Math.ceil(deadlineMs / 5));
  return Math.min(wanted, Math.floor(deadlineMs / 2));
}
