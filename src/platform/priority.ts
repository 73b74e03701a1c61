/** A thread's scheduling priority, in a module of its own: a batch thread lowers it before it loads anything else. */
import { getPriority, setPriority } from 'node:os';

/**
 * Lowers the calling thread's scheduling priority to `nice` (0-19; 0 leaves it). On Linux a nice value belongs to a
 * thread, and threads inherit it from the thread that makes them, so a batch thread that calls this first runs its
 * scoring, and the ONNX threads it makes, behind the gateway's: the kernel hands the cores to bedside work first and
 * to the batch whenever they are otherwise idle. Returns the thread's nice value now.
 */
export function lowerThreadPriority(nice: number): number {
  const current = getPriority();
  // only ever lower: a process already started nicer than asked keeps its own value
  if (nice <= current) return current;
  try {
    setPriority(nice);
    return nice;
  } catch {
    return current; // a platform that refuses it: the run goes on at the process's priority
  }
}
